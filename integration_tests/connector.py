"""Run the connector as a user does (a subprocess: `python main.py ...` or Airbyte's manifest
runner) and parse what it prints."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MANIFEST = ROOT / "manifest.yaml"
COMPONENTS = ROOT / "source_northpass" / "components.py"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    messages: List[Dict[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> List[Dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def records(self, stream: Optional[str] = None) -> List[Dict[str, Any]]:
        return [m["record"]["data"] for m in self.of_type("RECORD") if stream in (None, m["record"]["stream"])]

    def record_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for m in self.of_type("RECORD"):
            counts[m["record"]["stream"]] = counts.get(m["record"]["stream"], 0) + 1
        return counts

    def logs(self, level: Optional[str] = None) -> List[str]:
        return [m["log"]["message"] for m in self.of_type("LOG") if level in (None, m["log"]["level"])]

    def errors(self) -> List[Dict[str, Any]]:
        return [m["trace"]["error"] for m in self.of_type("TRACE") if m["trace"].get("type") == "ERROR"]

    def connection_status(self) -> Dict[str, Any]:
        (status,) = [m["connectionStatus"] for m in self.of_type("CONNECTION_STATUS")]
        return status

    def states(self) -> List[Dict[str, Any]]:
        return [m["state"] for m in self.of_type("STATE")]

    def output(self) -> str:
        return self.stdout + self.stderr


def _write(directory: Path, name: str, content: Any) -> str:
    path = directory / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def injected_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config Airbyte Cloud hands its manifest runner: manifest and components injected."""
    components = COMPONENTS.read_text()
    return {
        **config,
        "__injected_declarative_manifest": yaml.safe_load(MANIFEST.read_text()),
        "__injected_components_py": components,
        "__injected_components_py_checksums": {"md5": hashlib.md5(components.encode()).hexdigest()},
    }


RUNNERS = ("main.py", "source-declarative-manifest")
RUNNER_ENV = {"AIRBYTE_ENABLE_UNSAFE_CODE": "true"}  # the manifest runner's switch for injected code


def runner_command(runner: str) -> List[str]:
    """What starts the connector: `python main.py`, or Airbyte's manifest runner."""
    if runner == RUNNERS[0]:
        return [PYTHON, str(ROOT / "main.py")]
    return [str(Path(PYTHON).parent / runner)]


def runner_config(runner: str, config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config as `runner` takes it: the manifest runner wants manifest and components in it."""
    return config if runner == RUNNERS[0] else injected_config(config)


def _args(directory: Path, command: str, runner: str, config, catalog, state) -> List[str]:
    args: List[str] = [*runner_command(runner), command]
    if config is not None:
        args += ["--config", _write(directory, "config.json", runner_config(runner, config))]
    if catalog is not None:
        args += ["--catalog", _write(directory, "catalog.json", catalog)]
    if state is not None:
        args += ["--state", _write(directory, "state.json", list(state))]
    return args


def _messages(stdout: str) -> List[Dict[str, Any]]:
    messages = []
    for line in stdout.splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            pass
    return messages


def run_connector(
    command: str,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    state: Optional[Sequence[Mapping[str, Any]]] = None,
    runner: str = "main.py",
    timeout: float = 300,
    env: Optional[Mapping[str, str]] = None,
) -> Run:
    """`runner` is "main.py" or "source-declarative-manifest" (config gets the manifest injected)."""
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.run(
            _args(Path(tmp), command, runner, config, catalog, state),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(ROOT),
            env={**os.environ, **RUNNER_ENV, **(env or {})},
        )
    return Run(process.returncode, process.stdout, process.stderr, _messages(process.stdout))


def kill_read_when(
    until: Callable[[List[Dict[str, Any]]], bool],
    config: Mapping[str, Any],
    catalog: Mapping[str, Any],
    runner: str = "main.py",
    timeout: float = 300,
) -> Run:
    """A `read` killed (SIGKILL, as a worker lost mid-sync) as soon as `until(messages so far)` holds."""
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            _args(Path(tmp), "read", runner, config, catalog, None),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=str(ROOT),
            env={**os.environ, **RUNNER_ENV},
        )
        lines: List[str] = []
        watchdog = threading.Timer(timeout, process.kill)  # a connector that hangs fails the test
        watchdog.start()
        try:
            for line in process.stdout:
                lines.append(line)
                if line.startswith('{"type":"STATE"') and until(_messages("".join(lines))):
                    process.kill()
                    break
        finally:
            watchdog.cancel()
            process.kill()
            process.wait(timeout=timeout)
            process.stdout.close()
    return Run(process.returncode, "".join(lines), "", _messages("".join(lines)))


def catalog_for(streams: Iterable[str], sync_mode: str = "full_refresh", discovered: Optional[Run] = None) -> Dict[str, Any]:
    """A configured catalog for `streams`, with the schemas `discover` returned when given."""
    schemas = {}
    if discovered is not None:
        (catalog,) = [m["catalog"] for m in discovered.of_type("CATALOG")]
        schemas = {s["name"]: s["json_schema"] for s in catalog["streams"]}
    return {
        "streams": [
            {
                "stream": {
                    "name": name,
                    "json_schema": schemas.get(name, {"type": "object"}),
                    "supported_sync_modes": ["full_refresh", "incremental"],
                },
                "sync_mode": sync_mode,
                "destination_sync_mode": "append" if sync_mode == "incremental" else "overwrite",
            }
            for name in streams
        ]
    }
