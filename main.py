"""Run manifest.yaml with its components locally, as Airbyte's manifest runner runs them in the
connector's image: a YamlDeclarativeSource built from the manifest, then the CDK's own launch.

The manifest names its classes `source_declarative_manifest.components.<Class>`, the module the
runner registers the components file as; this registers source_northpass/components.py under it.
An input file that cannot be read is answered with a config_error (the runner prints a traceback).
"""

import sys
from pathlib import Path

from airbyte_cdk.entrypoint import AirbyteEntrypoint, launch
from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_northpass import components

MANIFEST = Path(__file__).resolve().parent / "manifest.yaml"


def run(args: list) -> None:
    sys.modules["source_declarative_manifest.components"] = components
    parsed = AirbyteEntrypoint.parse_args(args)
    try:
        config = YamlDeclarativeSource.read_config(parsed.config) if hasattr(parsed, "config") else None
        catalog = YamlDeclarativeSource.read_catalog(parsed.catalog) if hasattr(parsed, "catalog") else None
        state = YamlDeclarativeSource.read_state(parsed.state) if getattr(parsed, "state", None) else []
    except Exception as error:  # an input file that is not JSON, or not of its shape
        failure = AirbyteTracedException(message=str(error), failure_type=FailureType.config_error)
        message = failure.as_connection_status_message() if parsed.command == "check" else failure.as_airbyte_message()
        print(AirbyteEntrypoint.airbyte_message_to_string(message))
        sys.exit(0 if parsed.command == "check" else 1)  # check answers FAILED, as the CDK does
    source = YamlDeclarativeSource(
        str(MANIFEST), catalog=catalog, config=config, state=state, config_path=getattr(parsed, "config", None)
    )
    launch(source, args)


if __name__ == "__main__":
    run(sys.argv[1:])
