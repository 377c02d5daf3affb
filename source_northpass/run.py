"""Entry point: run the top-level manifest.yaml with this package's components.

The manifest names its components `source_declarative_manifest.components.<Class>`, as Airbyte's
manifest runner registers an injected components file under that name. Registering our module
under the same name lets `python main.py` run the very same manifest and the very same file.
"""

import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional

from source_northpass.fast_start import defer_cdk_package_init, defer_serializer_schemas, freeze

defer_cdk_package_init()  # both before the first import of the CDK (see fast_start.py)
defer_serializer_schemas()

import yaml  # noqa: E402

from jsonschema import Draft7Validator  # noqa: E402
from jsonschema.exceptions import best_match  # noqa: E402

from airbyte_cdk.entrypoint import AirbyteEntrypoint  # noqa: E402
from airbyte_cdk.logger import PRINT_BUFFER  # noqa: E402
from airbyte_cdk.sources.utils.schema_helpers import split_config  # noqa: E402
from airbyte_cdk.utils.traced_exception import AirbyteTracedException  # noqa: E402
from airbyte_cdk.models import (  # noqa: E402
    AirbyteConnectionStatus,
    AirbyteErrorTraceMessage,
    AirbyteMessage,
    AirbyteTraceMessage,
    FailureType,
    Status,
    TraceType,
    Type,
)
from airbyte_cdk.sources.declarative.concurrent_declarative_source import (  # noqa: E402
    ConcurrentDeclarativeSource,
)
from airbyte_cdk.utils.datetime_helpers import ab_datetime_now  # noqa: E402

from source_northpass import components, fast_paths  # noqa: E402
from source_northpass.prefetch import PREFETCH  # noqa: E402

fast_paths.install()  # per-record and per-request work done once or cheaply (see fast_paths.py)
PREFETCH.install()  # the CDK uses what main.py asked for early (see prefetch.py)

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = ROOT / "manifest.yaml"
COMPONENTS_PATH = Path(components.__file__)


def register_components() -> None:
    sys.modules.setdefault("source_declarative_manifest.components", components)


def load_manifest() -> dict:
    return yaml.load(MANIFEST_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _stream_name(entry: Mapping[str, Any]) -> str:
    """A `streams:` entry's name: inline, or the last part of its `$ref`."""
    return str(entry.get("name") or str(entry.get("$ref", "")).rsplit("/", 1)[-1])


def create_source(
    config: Optional[Mapping[str, Any]] = None,
    catalog: Any = None,
    state: Any = None,
    config_path: Optional[str] = None,
) -> ConcurrentDeclarativeSource:
    register_components()
    manifest = load_manifest()
    if catalog is not None:
        # A read builds only the streams it was asked for (parents are built from definitions,
        # not from this list): ~0.07 s less start-up than building all eleven.
        selected = {configured.stream.name for configured in catalog.streams}
        manifest["streams"] = [s for s in manifest["streams"] if _stream_name(s) in selected]
    return ConcurrentDeclarativeSource(
        source_config=manifest,
        config=config,
        catalog=catalog,
        state=state,
        config_path=config_path,
    )


def _config_error_message(command: str, message: str) -> str:
    """A refused config: FAILED for `check` (the protocol's answer), a config_error trace otherwise."""
    if command == "check":
        status = AirbyteMessage(
            type=Type.CONNECTION_STATUS,
            connectionStatus=AirbyteConnectionStatus(status=Status.FAILED, message=message),
        )
        return AirbyteEntrypoint.airbyte_message_to_string(status)
    trace = AirbyteMessage(
        type=Type.TRACE,
        trace=AirbyteTraceMessage(
            type=TraceType.ERROR,
            emitted_at=ab_datetime_now().to_epoch_millis(),
            error=AirbyteErrorTraceMessage(
                message=message,
                internal_message=message,
                failure_type=FailureType.config_error,
            ),
        ),
    )
    return AirbyteEntrypoint.airbyte_message_to_string(trace)


def _source_from_args(args: List[str]) -> Optional[ConcurrentDeclarativeSource]:
    parsed = AirbyteEntrypoint.parse_args(args)
    command = parsed.command
    try:
        config = ConcurrentDeclarativeSource.read_config(parsed.config) if command != "spec" else None
        catalog = ConcurrentDeclarativeSource.read_catalog(parsed.catalog) if command == "read" else None
        state = ConcurrentDeclarativeSource.read_state(parsed.state) if command == "read" and parsed.state else []
    except Exception as error:  # unreadable config, catalog or state files
        print(_config_error_message(command, f"Could not read the {command} input files: {error}"))
        return None
    if config is not None and not isinstance(config, dict):
        print(_config_error_message(command, "The config file must hold a JSON object."))
        return None
    try:
        return create_source(config=config, catalog=catalog, state=state, config_path=getattr(parsed, "config", None))
    except Exception as error:
        # Never echo the config here: it holds the API key.
        print(_config_error_message(command, f"The connector could not start with this config: {type(error).__name__}"))
        return None


class NorthpassEntrypoint(AirbyteEntrypoint):
    """The CDK entrypoint, with config errors that name the field at fault.

    The CDK reports "0 is less than the minimum of 1" without saying which field; a person
    fixing a config needs "page_size: 0 is less than the minimum of 1". The value of a secret
    field is never quoted.
    """

    @staticmethod
    def validate_connection(source_spec: Any, config: Any) -> None:
        connector_config, _ = split_config(config)
        schema = source_spec.connectionSpecification
        error = best_match(Draft7Validator(schema).iter_errors(connector_config))
        if error is None:
            return
        field = ".".join(str(p) for p in error.absolute_path) or (
            error.message.split("'")[1] if error.validator == "required" else ""
        )
        secret = bool(schema.get("properties", {}).get(field, {}).get("airbyte_secret"))
        detail = f"is not valid ({error.validator})" if secret else error.message
        message = f"Config validation error: {field}: {detail}" if field else f"Config validation error: {detail}"
        raise AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error)


def launch(source: ConcurrentDeclarativeSource, args: List[str]) -> None:
    """The CDK's launch(), with NorthpassEntrypoint: output through the CDK's print buffer."""
    entrypoint = NorthpassEntrypoint(source)
    parsed = entrypoint.parse_args(args)
    with PRINT_BUFFER:
        for message in entrypoint.run(parsed):
            print(f"{message}\n", end="")


def run() -> None:
    args = sys.argv[1:]
    source = _source_from_args(args)
    if source is None:
        sys.exit(0 if args[:1] == ["check"] else 1)
    freeze()  # the source lives until exit (fast_start.py)
    launch(source, args)
