"""Run the connector in-process, as the Airbyte entrypoint would, and collect its output."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

from airbyte_cdk.models import SyncMode
from airbyte_cdk.test.catalog_builder import CatalogBuilder, ConfiguredAirbyteStreamBuilder
from airbyte_cdk.test import entrypoint_wrapper
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput, _run_command, discover, read
from airbyte_cdk.test.models.outcome import ExpectedOutcome
from airbyte_cdk.test.state_builder import StateBuilder

from source_northpass.run import NorthpassEntrypoint, create_source

# Run every command through the connector's own entrypoint, as `python main.py` does.
entrypoint_wrapper.AirbyteEntrypoint = NorthpassEntrypoint


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
    source = create_source(config=config, catalog=configured, state=state_messages)
    return read(
        source,
        config,
        configured,
        state_messages,
        expected_outcome=ExpectedOutcome.EXPECT_EXCEPTION if expect_failure else ExpectedOutcome.EXPECT_SUCCESS,
    )


def run_check(config: Mapping[str, Any]) -> EntrypointOutput:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        return _run_command(create_source(config=config), ["check", "--config", str(path)], expecting_exception=None)


def run_discover(config: Mapping[str, Any]) -> EntrypointOutput:
    return discover(create_source(config=config), config)


def record_data(output: EntrypointOutput, stream: Optional[str] = None) -> List[Mapping[str, Any]]:
    return [m.record.data for m in output.records if stream is None or m.record.stream == stream]


def log_lines(output: EntrypointOutput, level: Optional[str] = None) -> List[str]:
    return [m.log.message for m in output.logs if level is None or m.log.level.name == level]


def fresh_python(code: str, *args: str) -> str:
    """Run `code` (written to a file, so its source can be read back) with `args` in a new
    interpreter, and return what it printed. For what must happen before the CDK is first
    imported, which in a test process has long happened."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "fresh.py"
        script.write_text(textwrap.dedent(code))
        result = subprocess.run(
            [sys.executable, str(script), *args], cwd=root, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
    assert result.returncode == 0, result.stderr
    return result.stdout
