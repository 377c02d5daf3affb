"""For `airbyte-cdk connector test .`, which writes its test file under .tmp/ and runs pytest from
this directory (`make test` runs it after the repo's own tests).

- The configs acceptance-test-config.yml names point at the fake Northpass server, whose port
  changes every run: for the standard suite's tests only, a session fixture starts the server and
  writes them under integration_tests/.generated/ (git-ignored). Unit tests never open a socket.
- The suite's Docker image tests are skipped when no Docker engine answers `docker info`.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from airbyte_cdk.test.standard_tests.connector_base import ConnectorTestSuiteBase

GENERATED = Path(__file__).resolve().parent / "integration_tests" / ".generated"

# Fake keys, long enough and with digits so that the suite's secret-leak check looks for them.
API_KEY = "fake-northpass-key-0123456789"
WRONG_API_KEY = "wrong-northpass-key-9876543210"
SCHOOL = dict(people=300, courses=12, enrollments=400, groups=6, learning_paths=3, categories=4,
              activities_per_course=3, events=300, event_burst=120, seed=7)


def _in_standard_suite(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    return cls is not None and issubclass(cls, ConnectorTestSuiteBase)


@pytest.fixture(scope="session")
def fake_northpass_configs():
    from integration_tests.fake_northpass import FakeNorthpass, School

    GENERATED.mkdir(parents=True, exist_ok=True)
    with FakeNorthpass(School.generate(**SCHOOL), api_key=API_KEY, max_limit=100, default_limit=10,
                       rate_limit=None) as server:
        # No rate limit on the fake server: no need to pace at Northpass's 10 requests/second.
        config = {"api_key": API_KEY, "base_url": server.url, "page_size": 100, "requests_per_second": 100}
        files = {"config.json": config, "invalid_config.json": {**config, "api_key": WRONG_API_KEY}}
        for name, content in files.items():
            (GENERATED / name).write_text(json.dumps(content, indent=2) + "\n")
        yield server
        for name in files:
            (GENERATED / name).unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _fake_northpass_for_the_standard_suite(request: pytest.FixtureRequest) -> None:
    if _in_standard_suite(request.node):
        request.getfixturevalue("fake_northpass_configs")


def _docker_engine_problem():
    """Why no Docker engine can be used, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`docker info` failed ({type(error).__name__})"
    return None if result.returncode == 0 else "the docker command is installed but no Docker engine answers"


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    image_tests = [item for item in items if item.get_closest_marker("image_tests")]
    problem = _docker_engine_problem() if image_tests else None
    if problem:
        skip = pytest.mark.skip(reason=f"Docker image test: {problem}")
        for item in image_tests:
            item.add_marker(skip)
