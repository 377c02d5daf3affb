"""The CDK's standard connector tests, run in-process against the fake Northpass server.

`DeclarativeSourceTestSuite` reads `acceptance-test-config.yml` at the connector root and runs
spec / check / discover / read with the configs it lists, on the top-level manifest.yaml and
the custom components. Those configs point at the fake server, whose port changes every run,
so a module fixture starts the server and writes them into `integration_tests/.generated/`
(git-ignored) before the first test reads them, and removes them afterwards.

Offline: the only server is the fake one on 127.0.0.1. The suite's Docker image tests are
skipped (see `_skip_image_tests`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boltons.typeutils import classproperty

from airbyte_cdk.test.standard_tests import DeclarativeSourceTestSuite

from integration_tests.fake_northpass import FakeNorthpass, School

# `--connector-image` & co., and the `scenario` parametrization from acceptance-test-config.yml.
pytest_plugins = ["airbyte_cdk.test.standard_tests.pytest_hooks"]

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "integration_tests" / ".generated"
COMPONENTS = ROOT / "source_northpass" / "components.py"

# Fake keys, long enough and with digits so that the suite's secret-leak check searches the
# output for them (it ignores values under 8 characters or without a digit).
API_KEY = "fake-northpass-key-0123456789"
WRONG_API_KEY = "wrong-northpass-key-9876543210"

SCHOOL = dict(people=300, courses=12, enrollments=400, groups=6, learning_paths=3, categories=4,
              activities_per_course=3, seed=7)


def _configs(base_url: str) -> dict[str, dict]:
    """The files acceptance-test-config.yml refers to, by name under integration_tests/.generated/."""
    config = {
        "api_key": API_KEY,
        "base_url": base_url,
        "page_size": 100,
        # The fake server runs without a rate limit; no need to pace at Northpass's 10/s.
        "requests_per_second": 100,
    }
    return {
        "config.json": config,
        "invalid_config.json": {**config, "api_key": WRONG_API_KEY},
    }


def _acquire_lock(path: Path, timeout: float = 180.0):
    """Serialise concurrent runs of this module: they would overwrite each other's configs."""
    handle = open(path, "w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                pytest.fail(f"another run of the standard suite held {path} for over {timeout:.0f}s")
            time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def fake_northpass_configs():
    """Start the fake server and write the configs the acceptance-test-config.yml lists.

    Also undoes what the suite leaves behind for other test modules: it registers the injected
    components.py text as `source_declarative_manifest.components` and `components` in
    sys.modules, and sets AIRBYTE_ENABLE_UNSAFE_CODE.
    """
    GENERATED.mkdir(parents=True, exist_ok=True)
    lock = _acquire_lock(GENERATED / ".lock")
    saved_modules = {name: sys.modules.get(name) for name in ("source_declarative_manifest.components", "components")}
    saved_unsafe = os.environ.get("AIRBYTE_ENABLE_UNSAFE_CODE")
    written: list[Path] = []
    try:
        with FakeNorthpass(School.generate(**SCHOOL), api_key=API_KEY, max_limit=100, default_limit=10,
                           rate_limit=None) as server:
            for name, config in _configs(server.url).items():
                path = GENERATED / name
                path.write_text(json.dumps(config, indent=2) + "\n")
                written.append(path)
            yield server
    finally:
        for path in written:
            path.unlink(missing_ok=True)
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        if saved_unsafe is None:
            os.environ.pop("AIRBYTE_ENABLE_UNSAFE_CODE", None)
        else:
            os.environ["AIRBYTE_ENABLE_UNSAFE_CODE"] = saved_unsafe
        lock.close()


def _docker_engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`docker info` failed ({type(error).__name__})"
    if result.returncode != 0:
        return "the docker CLI is installed but no Docker engine answers `docker info`"
    return None


class TestNorthpassStandardSuite(DeclarativeSourceTestSuite):
    """Standard tests for source-northpass, configured by acceptance-test-config.yml."""

    @classproperty
    def connector_name(cls) -> str:
        # The connector root is the checkout directory, whose name need not be the connector's.
        return "source-northpass"

    @classproperty
    def components_py_path(cls) -> Path:
        # The real file, not the `components.py` symlink at the root, which may not survive
        # a copy or an archive of the repository.
        return COMPONENTS

    @pytest.fixture(autouse=True)
    def _skip_image_tests(self, request: pytest.FixtureRequest) -> None:
        """Skip the suite's Docker image tests (`image_tests` mark).

        They build the connector image FROM docker.io/airbyte/source-declarative-manifest (a
        registry pull), the backward-compatibility test downloads the published spec from
        connectors.airbyte.com, and the check/discover/read ones would run the connector in a
        container, which cannot reach the fake server on the host's 127.0.0.1. This suite is
        offline and the in-process tests cover the same commands.
        """
        if request.node.get_closest_marker("image_tests") is None:
            return
        engine = _docker_engine_problem()
        pytest.skip(
            "Docker image test, not run offline: it pulls the base image and/or reads the connector "
            "registry, and a container cannot reach the fake server on the host's 127.0.0.1"
            + (f"; also, {engine}" if engine else "")
            + ". The in-process tests run the same commands."
        )
