"""The start-up shortcuts in source_northpass/fast_start.py (and create_source's stream filter):
in place when the entry point starts, and harmless to whatever asks for what they skip."""

from unit_tests.harness import fresh_python


SCHEMAS_AS_JSON = """
import dataclasses, json, sys

if sys.argv[1:] == ["entry-point"]:
    import source_northpass.run  # the entry point: patches, then imports the CDK
    from airbyte_cdk.models.airbyte_protocol_serializers import AirbyteMessageSerializer
    from source_northpass.fast_start import _DeferredSchema

    assert isinstance(AirbyteMessageSerializer._schema, _DeferredSchema), "schema was built at import"
    assert AirbyteMessageSerializer.get_json_schema() is AirbyteMessageSerializer.get_json_schema()

from serpyco_rs import Serializer
from airbyte_cdk.models.airbyte_protocol_serializers import AirbyteMessageSerializer


@dataclasses.dataclass
class Documented:
    when: str
    \"\"\"An attribute docstring, which serpyco_rs reads from this file.\"\"\"


for serializer in (AirbyteMessageSerializer, Serializer(Documented)):
    print(json.dumps(serializer.get_json_schema(), sort_keys=True, default=repr))
"""


def test_the_entry_point_defers_serializer_schemas_and_they_come_out_the_same():
    unpatched, deferred = fresh_python(SCHEMAS_AS_JSON), fresh_python(SCHEMAS_AS_JSON, "entry-point")
    assert "AirbyteMessage" in unpatched and "An attribute docstring" in unpatched
    assert deferred == unpatched


def test_serializers_still_dump_and_load():
    out = fresh_python(
        """
        import source_northpass.run
        from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, Type
        from airbyte_cdk.models.airbyte_protocol_serializers import AirbyteMessageSerializer

        message = AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream="people", data={"id": "p1"}, emitted_at=1))
        again = AirbyteMessageSerializer.load(AirbyteMessageSerializer.dump(message))
        assert again == message, again
        print(again.record.data["id"])
        """
    )
    assert out.strip() == "p1"


def test_collector_paused_leaves_the_collector_on_with_start_up_objects_frozen():
    out = fresh_python(
        """
        import gc
        from source_northpass.fast_start import collector_paused
        with collector_paused():
            assert not gc.isenabled()
            kept = [[n] for n in range(50_000)]  # built while paused, kept until exit
        assert gc.isenabled()
        assert gc.get_freeze_count() > 50_000, gc.get_freeze_count()
        print("frozen")
        """
    )
    assert out.strip() == "frozen"


EXIT_WITH_GARBAGE = """
    import sys
    if sys.argv[1:] == ["components"]:
        import source_northpass.components
    class Cycle:
        def __del__(self):
            print("collected at exit")
    garbage = Cycle()
    garbage.me = garbage  # a cycle: only the collector frees it
    del garbage
    print("end")
    """


def test_importing_the_components_skips_the_collectors_last_pass_at_exit():
    assert fresh_python(EXIT_WITH_GARBAGE).split() == ["end", "collected", "at", "exit"], "the pass being skipped"
    assert fresh_python(EXIT_WITH_GARBAGE, "components").split() == ["end"]


def test_a_read_builds_only_the_streams_its_catalog_selects():
    from source_northpass.run import create_source
    from unit_tests.harness import catalog
    from unit_tests.northpass_builders import config

    cfg = config()
    everything = create_source(config=cfg).streams(cfg)
    selected = create_source(config=cfg, catalog=catalog(["course_enrollments", "people"])).streams(cfg)
    assert len(everything) == 11
    assert sorted(s.name for s in selected) == ["course_enrollments", "people"]


def test_the_cdk_package_init_runs_only_when_a_top_level_name_is_asked_for():
    out = fresh_python(
        """
        import sys
        import source_northpass.run  # imports every CDK module the connector uses
        package = sys.modules["airbyte_cdk"]
        assert "__all__" not in vars(package), "airbyte_cdk/__init__.py ran at start-up"
        assert package.__version__  # a name the real init defines: it runs now
        from airbyte_cdk import AirbyteEntrypoint, launch
        from airbyte_cdk.entrypoint import AirbyteEntrypoint as same
        assert AirbyteEntrypoint is same and "__all__" in vars(package) and package.__version__
        print("lazy")
        """
    )
    assert out.strip() == "lazy"


def test_spec_check_discover_and_read_never_run_the_cdk_package_init():
    out = fresh_python(
        """
        import json, sys, tempfile
        from pathlib import Path
        from source_northpass.fast_start import collector_paused
        with collector_paused():
            from source_northpass.run import run
        import requests_mock

        tmp = Path(tempfile.mkdtemp())
        (tmp / "config.json").write_text(json.dumps({"api_key": "unit-test-key"}))
        (tmp / "catalog.json").write_text(json.dumps({"streams": [{
            "stream": {"name": "people", "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
            "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]}))
        commands = [["spec"], ["check", "--config", str(tmp / "config.json")],
                    ["discover", "--config", str(tmp / "config.json")],
                    ["read", "--config", str(tmp / "config.json"), "--catalog", str(tmp / "catalog.json")]]
        real_stdout = sys.stdout
        with requests_mock.Mocker() as http:
            http.get("https://api.northpass.com/v2/people", json={"data": [], "links": {}})
            for command in commands:
                sys.argv = ["main.py", *command]
                sys.stdout = open(tmp / "out.txt", "w")
                run()
                sys.stdout.close()
                sys.stdout = real_stdout
        assert http.call_count == 2, http.request_history  # check and read
        assert "__all__" not in vars(sys.modules["airbyte_cdk"]), "airbyte_cdk/__init__.py ran"
        print("never")
        """
    )
    assert out.strip().endswith("never")
