"""`make demo`: check, discover and a full read of every stream, then records per stream.

Without NORTHPASS_API_KEY it starts the bundled fake Northpass server on 127.0.0.1 and reads
from it (and prints how many requests it served); with NORTHPASS_API_KEY set it reads the
real API (NORTHPASS_BASE_URL overrides the URL). The key is passed in a temporary config file
and never printed.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integration_tests.fake_northpass import FakeNorthpass, School  # noqa: E402

PYTHON = sys.executable


def connector(command: str, config_path: Path, catalog_path: Path = None) -> list:
    args = [PYTHON, str(ROOT / "main.py"), command, "--config", str(config_path)]
    if catalog_path:
        args += ["--catalog", str(catalog_path)]
    process = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    messages = []
    for line in process.stdout.splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            pass
    for message in messages:
        if message.get("type") == "TRACE" and message["trace"].get("type") == "ERROR":
            print(f"  error: {message['trace']['error']['message']}")
        if message.get("type") == "LOG" and message["log"]["level"] in ("WARN", "ERROR", "FATAL"):
            print(f"  {message['log']['level'].lower()}: {message['log']['message'].splitlines()[0][:200]}")
    if process.returncode != 0:
        print(f"  {command} exited with {process.returncode}")
    return messages


def demo(config: dict, server: FakeNorthpass = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))

        print("$ python main.py check")
        status = [m["connectionStatus"] for m in connector("check", config_path) if m.get("type") == "CONNECTION_STATUS"]
        print(f"  {status[0]['status'] if status else 'no status'} {status[0].get('message') or '' if status else ''}")
        if not status or status[0]["status"] != "SUCCEEDED":
            return 1

        print("$ python main.py discover")
        catalogs = [m["catalog"] for m in connector("discover", config_path) if m.get("type") == "CATALOG"]
        if not catalogs:
            return 1
        streams = catalogs[0]["streams"]
        print(f"  {len(streams)} streams: {', '.join(s['name'] for s in streams)}")

        catalog = {
            "streams": [
                {"stream": s, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"} for s in streams
            ]
        }
        catalog_path = Path(tmp) / "catalog.json"
        catalog_path.write_text(json.dumps(catalog))
        print("$ python main.py read (full refresh, every stream)")
        started = time.monotonic()
        messages = connector("read", catalog_path=catalog_path, config_path=config_path)
        seconds = time.monotonic() - started
        counts = Counter(m["record"]["stream"] for m in messages if m.get("type") == "RECORD")
        width = max(len(s["name"]) for s in streams)
        for s in streams:
            print(f"  {s['name']:<{width}}  {counts.get(s['name'], 0):>7} records")
        print(f"  {'total':<{width}}  {sum(counts.values()):>7} records in {seconds:.1f} s")
        if server is not None:
            served = Counter(r.status for r in server.requests)
            print(f"  requests served by the fake server: {sum(served.values())} ({dict(served)})")
        failed = any(m.get("type") == "TRACE" and m["trace"].get("type") == "ERROR" for m in messages)
        return 1 if failed else 0


def main() -> int:
    key = os.environ.get("NORTHPASS_API_KEY")
    if key:
        base_url = os.environ.get("NORTHPASS_BASE_URL", "https://api.northpass.com")
        print(f"Reading the real Northpass API at {base_url} (key from NORTHPASS_API_KEY).")
        return demo({"api_key": key, "base_url": base_url})
    school = School.generate(people=1000, courses=20, enrollments=800, groups=8, learning_paths=4, categories=5, seed=1)
    with FakeNorthpass(school, api_key="demo-key", rate_limit=10, latency=0.02) as server:
        print(f"No NORTHPASS_API_KEY: reading the bundled fake Northpass server at {server.url}")
        print("(1,000 people, 20 courses, 800 enrollments; 10 requests/second like the real API).")
        return demo({"api_key": "demo-key", "base_url": server.url}, server)


if __name__ == "__main__":
    sys.exit(main())
