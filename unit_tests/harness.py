"""Build the connector as Airbyte does (manifest.yaml and the components file, through the CDK's
YamlDeclarativeSource and AirbyteEntrypoint) and collect what a command prints."""

import json
import tempfile
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.models import SyncMode
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource
from airbyte_cdk.test.catalog_builder import CatalogBuilder, ConfiguredAirbyteStreamBuilder
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput, discover, read
from airbyte_cdk.test.models.outcome import ExpectedOutcome
from airbyte_cdk.test.state_builder import StateBuilder

MANIFEST = Path(__file__).resolve().parent.parent / "manifest.yaml"


def create_source(config: Mapping[str, Any], catalog: Any = None, state: Any = None) -> YamlDeclarativeSource:
    return YamlDeclarativeSource(path_to_yaml=str(MANIFEST), catalog=catalog, config=config, state=state)


def catalog(streams: Iterable[str], sync_mode: SyncMode = SyncMode.full_refresh):
    builder = CatalogBuilder()
    for name in streams:
        builder.with_stream(ConfiguredAirbyteStreamBuilder().with_name(name).with_sync_mode(sync_mode))
    return builder.build()


def run_read(
    config: Mapping[str, Any],
    streams: Iterable[str],
    state: Optional[Mapping[str, Mapping[str, Any]]] = None,
    sync_mode: SyncMode = SyncMode.full_refresh,
    expect_failure: bool = False,
) -> EntrypointOutput:
    configured = catalog(streams, sync_mode)
    state_messages = None
    if state is not None:
        builder = StateBuilder()
        for stream, stream_state in state.items():
            builder.with_stream_state(stream, stream_state)
        state_messages = builder.build()
    return read(
        create_source(config, configured, state_messages),
        config,
        configured,
        state_messages,
        expected_outcome=ExpectedOutcome.EXPECT_EXCEPTION if expect_failure else ExpectedOutcome.EXPECT_SUCCESS,
    )


def run_check(config: Mapping[str, Any]) -> EntrypointOutput:
    """`check`, as the CDK's launch() runs it (the CDK's test helpers have read and discover only)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        entrypoint = AirbyteEntrypoint(create_source(config))
        messages = list(entrypoint.run(AirbyteEntrypoint.parse_args(["check", "--config", str(path)])))
    return EntrypointOutput(messages=messages)


def run_discover(config: Mapping[str, Any]) -> EntrypointOutput:
    return discover(create_source(config), config)


def record_data(output: EntrypointOutput, stream: Optional[str] = None) -> List[Mapping[str, Any]]:
    return [m.record.data for m in output.records if stream is None or m.record.stream == stream]


def log_lines(output: EntrypointOutput, level: Optional[str] = None) -> List[str]:
    return [m.log.message for m in output.logs if level is None or m.log.level.name == level]
