"""`make demo`: check, discover and a full read of every stream, then records per stream.

Without NORTHPASS_API_KEY it starts the bundled fake Northpass server on 127.0.0.1 and reads
from it (and prints how many requests it served); with NORTHPASS_API_KEY set it reads the
real API (NORTHPASS_BASE_URL overrides the URL). The key is passed in a temporary config file
and never printed.
"""

import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integration_tests.connector import run_connector  # noqa: E402
from integration_tests.fake_northpass import FakeNorthpass, School  # noqa: E402


def connector(command: str, config: dict, catalog: dict = None) -> list:
    """Run `python main.py <command>` and show its errors and warnings; return its messages."""
    run = run_connector(command, config, catalog)
    for error in run.errors():
        print(f"  error: {error['message']}")
    for level in ("WARN", "ERROR", "FATAL"):
        for line in run.logs(level):
            print(f"  {level.lower()}: {line.splitlines()[0][:200]}")
    if run.returncode != 0:
        print(f"  {command} exited with {run.returncode}")
    return run.messages


def demo(config: dict, server: FakeNorthpass = None) -> int:
    print("$ python main.py check")
    status = [m["connectionStatus"] for m in connector("check", config) if m.get("type") == "CONNECTION_STATUS"]
    print(f"  {status[0]['status'] if status else 'no status'} {status[0].get('message') or '' if status else ''}")
    if not status or status[0]["status"] != "SUCCEEDED":
        return 1

    print("$ python main.py discover")
    catalogs = [m["catalog"] for m in connector("discover", config) if m.get("type") == "CATALOG"]
    if not catalogs:
        return 1
    streams = catalogs[0]["streams"]
    print(f"  {len(streams)} streams: {', '.join(s['name'] for s in streams)}")

    catalog = {
        "streams": [
            {"stream": s, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"} for s in streams
        ]
    }
    print("$ python main.py read (full refresh, every stream)")
    started = time.monotonic()
    messages = connector("read", config, catalog)
    seconds = time.monotonic() - started
    counts = Counter(m["record"]["stream"] for m in messages if m.get("type") == "RECORD")
    width = max(len(s["name"]) for s in streams)
    for s in streams:
        print(f"  {s['name']:<{width}}  {counts.get(s['name'], 0):>7} records")
    print(f"  {'total':<{width}}  {sum(counts.values()):>7} records in {seconds:.1f} s")
    if server is not None:
        served = Counter(r.status for r in server.requests)
        print(f"  requests served by the fake server: {sum(served.values())} ({dict(served)}), by endpoint:")
        endpoints = Counter(re.sub(r"/[0-9a-f]{8}-[0-9a-f-]{27}", "/{id}", r.path) for r in server.requests if r.path != "/_stats")
        for endpoint, count in sorted(endpoints.items(), key=lambda item: -item[1]):
            print(f"    {count:>5}  {endpoint}")
    failed = any(m.get("type") == "TRACE" and m["trace"].get("type") == "ERROR" for m in messages)
    return 1 if failed else 0


def main() -> int:
    key = os.environ.get("NORTHPASS_API_KEY")
    if key:
        base_url = os.environ.get("NORTHPASS_BASE_URL", "https://api.northpass.com")
        print(f"Reading the real Northpass API at {base_url} (key from NORTHPASS_API_KEY).")
        return demo({"api_key": key, "base_url": base_url})
    # Small enough that person_course_progresses (one request per person) takes seconds.
    school = School.generate(people=150, courses=12, enrollments=300, groups=5, learning_paths=3, categories=4,
                             events=400, event_burst=120, seed=1)
    with FakeNorthpass(school, api_key="demo-key", rate_limit=10, latency=0.02) as server:
        print(f"No NORTHPASS_API_KEY: reading the bundled fake Northpass server at {server.url}")
        print("(150 people, 12 courses, 300 enrollments, 520 events; 10 requests/second like the real API).")
        return demo({"api_key": "demo-key", "base_url": server.url}, server)


if __name__ == "__main__":
    sys.exit(main())
