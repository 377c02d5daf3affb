"""`make bench`: how close a sync comes to Northpass's floor, on both runners, against the fake server.

The floor of a sync is the fewest requests it needs at the largest page the server gives,
divided by the rate limit (10 requests/second): people and courses in pages, plus at least one
request per course for its enrollments. Each run starts the fake Northpass server in this
process (latency and rate limit as given) and the connector as a subprocess, under each runner:
`python main.py read`, and Airbyte's manifest runner (`source-declarative-manifest read`, the
manifest and components injected into the config, as Airbyte Cloud starts it). It reports
records, requests, 429s, wall time (the whole process, Python start-up included), start-up
(process start to first request), sync time (first request to exit), the floor, wall/floor and
sync/floor, records per second of sync time, the connector's CPU time (user + system) and its
peak memory (max RSS). With --repeat N each figure is the median of N runs (429s: the worst
run); the runners take turns, so both see the same machine.

    python scripts/bench.py                          # 3,000 people, 40 courses, 1,200 enrollments, 80 ms
    python scripts/bench.py --people 10000 --changes 500
    python scripts/bench.py --cpu --people 40000     # no latency, no limit: records per second
    python scripts/bench.py --sizes 1000,3000,10000,30000 --repeat 3 --chart docs/bench.png
    python scripts/bench.py --repeat 5 --runners main.py   # medians of five runs, one runner
    python scripts/bench.py --jitter 0.015 --limit-after-latency  # requests reach the limiter out of step
    python scripts/bench.py --limiter bucket --burst 2   # a server counting its limit another way
    python scripts/bench.py --people 30000 --latencies 0.08,0.15,0.3,0.5 --query-cost 0.02 \
        --recent-share 0.7 --repeat 3 --chart docs/latency.png   # wall/floor against latency
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integration_tests.connector import RUNNER_ENV, RUNNERS, runner_command, runner_config  # noqa: E402
from integration_tests.fake_northpass import LIMITERS, FakeNorthpass, School  # noqa: E402

API_KEY = "bench-key-0000"
STREAMS = ["people", "courses", "course_enrollments"]


def catalog(mode: str) -> dict:
    return {
        "streams": [
            {
                "stream": {"name": s, "json_schema": {"type": "object"}, "supported_sync_modes": ["full_refresh", "incremental"]},
                "sync_mode": "incremental" if mode == "incremental" and s != "course_enrollments" else "full_refresh",
                "destination_sync_mode": "append",
            }
            for s in STREAMS
        ]
    }


def run_read(config: dict, mode: str, state: list = None, runner: str = RUNNERS[0]) -> dict:
    """One `python main.py read` (or the same read by Airbyte's manifest runner, the manifest and
    components injected into the config): records per stream, the last state, wall time, peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, content in (("config", runner_config(runner, config)), ("catalog", catalog(mode)), ("state", state)):
            if content is not None:
                paths[name] = Path(tmp) / f"{name}.json"
                paths[name].write_text(json.dumps(content))
        args = [*runner_command(runner), "read", "--config", str(paths["config"]), "--catalog", str(paths["catalog"])]
        if "state" in paths:
            args += ["--state", str(paths["state"])]
        records, states, errors, people = Counter(), {}, [], []
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
            env={**os.environ, **RUNNER_ENV},
        )
        # Drain stdout as fast as the platform would (a slow reader makes the connector wait on
        # the pipe), and look at the lines once the process has finished.
        chunks = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: process.stdout.read(1 << 20), b"")))
        reader.start()
        peak_kb = [0]
        sampler = threading.Thread(target=_watch_peak_rss, args=(process, peak_kb))
        sampler.start()
        status = process.wait()
        wall = time.monotonic() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sampler.join()
        reader.join()
        for line in b"".join(chunks).splitlines():
            if line.startswith(b'{"type":"RECORD"'):
                stream = line[37 : line.index(b'"', 37)].decode()
                records[stream] += 1
                if stream == "people":
                    people.append(json.loads(line)["record"]["data"]["id"])
            elif line.startswith(b'{"type":"STATE"'):
                message = json.loads(line)["state"]
                states[message["stream"]["stream_descriptor"]["name"]] = message
            elif b'"type":"TRACE"' in line and b'"ERROR"' in line:
                errors.append(json.loads(line)["trace"]["error"]["message"])
    return {
        "records": records,
        "people": people,
        "state": list(states.values()),
        "started": started,
        "ended": started + wall,
        "wall": wall,
        "peak_mb": peak_kb[0] / 1024,
        "cpu_s": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
        "ok": status == 0 and not errors,
        "errors": errors,
    }


def _watch_peak_rss(process: subprocess.Popen, peak_kb: list) -> None:
    """The connector's own peak RSS (VmHWM), read until it exits. (ru_maxrss of a child also
    counts the pages it shared with this process before exec, which holds the fake school.)"""
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak_kb[0] = max(peak_kb[0], int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.05)


def floor_requests(school: School, page: int, people: int = None) -> int:
    """Fewest requests for people (all of them, or `people` changed ones), courses, and each
    course's enrollments (at least one request per course)."""
    with school.lock:
        per_course = sum(max(1, math.ceil(len(school.enrollments.get(c, [])) / page)) for c in school.courses)
        people = len(school.people) if people is None else people
        return math.ceil(people / page) + math.ceil(len(school.courses) / page) + per_course


def measure(args, people: int, changes: int, runner: str, latency: float) -> list:
    school = School.generate(
        people=people, courses=args.courses, enrollments=args.enrollments, groups=1, learning_paths=1,
        categories=1, activities_per_course=0, seed=args.seed, recent_share=args.recent_share,
    )
    latency, limit = (0.0, None) if args.cpu else (latency, args.rate_limit)
    rows = []
    with FakeNorthpass(school, api_key=API_KEY, max_limit=args.max_limit, rate_limit=limit, latency=latency,
                       jitter=0.0 if args.cpu else args.jitter, limit_after_latency=args.limit_after_latency,
                       limiter=args.limiter, burst=args.burst) as server:
        server.query_cost = 0.0 if args.cpu else args.query_cost
        config = {
            "api_key": API_KEY,
            "base_url": server.url,
            "page_size": args.page_size,
            "num_workers": args.workers,
            "requests_per_second": 1000 if args.cpu else args.rate_limit,
        }
        warm_up(server)
        first = run_read(config, "full", runner=runner)
        everyone = set(school.people)
        rows.append(row("full", server, first, floor_requests(school, min(args.page_size, args.max_limit)), args, everyone))
        if changes:
            changed = {school.update_person() for _ in range(changes)}
            warm_up(server)
            server.reset_log()
            second = run_read(config, "incremental", state=first["state"], runner=runner)
            floor = floor_requests(school, min(args.page_size, args.max_limit), people=changes)
            rows.append(row(f"incremental ({changes} changed)", server, second, floor, args, changed))
    return rows


def warm_up(server) -> None:
    """Have the fake server sort its lists for the school as it is now, then wait out its rate
    window. The fake server sorts a list the first time it is asked after a change, holding its
    interpreter lock (about 0.1 s for 30,000 people), which delays the clock it stamps other
    requests' arrival with and so turns a compliant burst into 429s; a real API's lists are
    indexed. Waiting also keeps one run's last second out of the next run's rate window (syncs
    of one connection are minutes apart), and so does waiting before the first: a sync that
    ended with ten requests in its last second would have it refused."""
    time.sleep(1.0)
    for path in ("people", "courses"):
        request = urllib.request.Request(f"{server.url}/v2/{path}?limit=1&sort=updated_at", headers={"X-Api-Key": API_KEY})
        urllib.request.urlopen(request, timeout=30).read()
        time.sleep(0.2)  # even a limiter allowing no burst at all lets the next one in
    time.sleep(0.9)
    server.reset_log()


def row(label, server, result, floor_requests_count, args, expected: set) -> dict:
    """One run's figures; `expected`: the people it must emit (missing ones make it not ok)."""
    statuses = Counter(r.status for r in server.requests)
    requests = sum(statuses.values())
    records = sum(result["records"].values())
    floor = floor_requests_count / args.rate_limit
    first_request = server.requests[0].t if server.requests else result["started"]
    sync = result["ended"] - first_request  # from the first request to the process's exit
    return {
        "run": label,
        "records": records,
        "requests": requests,
        "429s": statuses.get(429, 0),
        "wall_s": round(result["wall"], 2),
        "floor_requests": floor_requests_count,
        "floor_s": round(floor, 2),
        "wall/floor": round(result["wall"] / floor, 2) if floor else None,
        "startup_s": round(first_request - result["started"], 2),
        "sync_s": round(sync, 2),
        "sync/floor": round(sync / floor, 2) if floor else None,
        "records/s": round(records / sync) if sync > 0 else None,
        "cpu_s": round(result["cpu_s"], 2),
        "peak_mb": round(result["peak_mb"]),
        "missing": len(expected - set(result["people"])),
        "dupes": len(result["people"]) - len(set(result["people"])),
        "ok": result["ok"] and expected <= set(result["people"]),
        "errors": result["errors"][:2],
    }


def median_row(rows) -> dict:
    """One row of figures, each the median over repeated runs (the machine's noise is large:
    wall times of one configuration vary by 10-20% from run to run on a shared 2-core VM)."""
    merged = dict(rows[0])
    for key, value in rows[0].items():
        if key == "429s":  # the worst run: a 429 must not hide behind a median
            merged[key] = max(r[key] for r in rows)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            median = statistics.median(r[key] for r in rows)
            merged[key] = round(median) if isinstance(value, int) else round(median, 2)
    merged["ok"] = all(r["ok"] for r in rows)
    merged["errors"] = [e for r in rows for e in r["errors"]]
    if len(rows) > 1:
        merged["run"] = f"{merged['run']} (median of {len(rows)})"
    return merged


def print_rows(rows, args) -> None:
    mode = "cpu-bound (no latency, no limit)" if args.cpu else (
        ("latency per row" if args.latencies else f"latency {args.latency * 1000:.0f} ms")
        + (f" +- {args.jitter * 1000:.0f} ms" if args.jitter else "")
        + (f", query cost {args.query_cost} s" if args.query_cost else "")
        + (f", {args.recent_share:.0%} of people updated in the last 90 days" if args.recent_share else "")
        + f", limit {args.rate_limit}/s" + (" checked after the latency" if args.limit_after_latency else "")
        + ("" if args.limiter == "window" else f" ({args.limiter}" + (f", burst {args.burst}" if args.burst else "") + ")")
    )
    print(f"# {mode}, page_size {args.page_size}, server max {args.max_limit}, workers {args.workers}, "
          f"{os.cpu_count()} cores")
    columns = ["runner", "run", "latency", "people", "records", "missing", "dupes", "requests", "429s", "wall_s", "startup_s",
               "sync_s", "floor_s", "wall/floor", "sync/floor", "records/s", "cpu_s", "peak_mb", "ok"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
        if r["errors"]:
            print(f"  errors: {r['errors']}")


def chart(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    if len({r["latency"] for r in rows}) > 1:  # wall/floor against latency
        for runner, line in zip(dict.fromkeys(r["runner"] for r in rows), ("-", ":")):
            for kind, marker in (("full", "o"), ("incremental", "s")):
                points = [(r["latency"] * 1000, r["wall/floor"]) for r in rows if r["runner"] == runner and r["run"].startswith(kind)]
                if points:
                    axis.plot(*zip(*points), marker=marker, linestyle=line, label=f"{kind} sync, {runner}")
        axis.axhline(1.0, linestyle="--", color="gray", label="floor (requests / 10 per second)")
        axis.set_xlabel("latency per request, ms")
        axis.set_ylabel("wall time / floor")
        axis.set_title(f"source-northpass: {rows[0]['people']:,} people, wall/floor against latency (10 req/s)")
        axis.set_ylim(bottom=0.9)
    else:  # wall time against school size
        for runner, line in zip(dict.fromkeys(r["runner"] for r in rows), ("-", ":")):
            for kind, marker in (("full", "o"), ("incremental", "s")):
                points = [(r["people"], r["wall_s"]) for r in rows if r["runner"] == runner and r["run"].startswith(kind)]
                if points:
                    axis.plot(*zip(*points), marker=marker, linestyle=line, label=f"{kind} sync, {runner} (wall)")
        floors = sorted({(r["people"], r["floor_s"]) for r in rows if r["run"].startswith("full")})
        axis.plot(*zip(*floors), linestyle="--", color="gray", label="floor of a full sync")
        axis.set_xlabel("people in the school (40 courses, 1,200 enrollments)")
        axis.set_ylabel("seconds")
        axis.set_title("source-northpass: sync time against school size (80 ms latency, 10 req/s)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"chart written to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--courses", type=int, default=40)
    parser.add_argument("--enrollments", type=int, default=1200)
    parser.add_argument("--changes", type=int, default=100, help="people changed before the incremental sync (0: none)")
    parser.add_argument("--latency", type=float, default=0.08)
    parser.add_argument("--latencies", help="comma-separated latencies to run one after the other (seconds)")
    parser.add_argument("--query-cost", type=float, default=0.0,
                        help="a list page's own time: seconds per 10,000 records listed plus per 100 returned")
    parser.add_argument("--recent-share", type=float, default=0.0,
                        help="share of people updated in the school's last 90 days (updates bunch in recent months)")
    parser.add_argument("--jitter", type=float, default=0.0, help="each request's latency uniform in latency +- this")
    parser.add_argument("--limit-after-latency", action="store_true",
                        help="the server checks its rate limit after the latency, so jitter moves arrivals")
    parser.add_argument("--rate-limit", type=int, default=10)
    parser.add_argument("--limiter", choices=LIMITERS, default="window",
                        help="how the server counts its limit: any moving second, each clock second, a token bucket")
    parser.add_argument("--burst", type=int, help="the bucket limiter's size (default: the rate limit)")
    parser.add_argument("--max-limit", type=int, default=100, help="the server's largest page")
    parser.add_argument("--page-size", type=int, default=100, help="the connector's page_size (100 is its default)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runners", default=",".join(RUNNERS),
                        help="how the connector is started, comma-separated: main.py, and/or Airbyte's manifest "
                        "runner (source-declarative-manifest) as Airbyte Cloud runs it")
    parser.add_argument("--cpu", action="store_true", help="no latency and no rate limit: measures records per second")
    parser.add_argument("--sizes", help="comma-separated people counts to run one after the other")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the table shows each figure's median")
    parser.add_argument("--chart", type=Path, help="write a PNG of wall time against school size (needs --sizes)")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.people]
    runners = args.runners.split(",")
    unknown = set(runners) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown runner(s) {sorted(unknown)}: choose from {', '.join(RUNNERS)}")
    latencies = [float(x) for x in args.latencies.split(",")] if args.latencies else [args.latency]
    rows = []
    for people in sizes:
        for latency in latencies:
            runs = {runner: [] for runner in runners}
            for _ in range(args.repeat):  # the runners take turns: a slow spell of the machine hits both
                for runner in runners:
                    runs[runner].append(measure(args, people, args.changes, runner, latency))
            for runner in runners:
                for same in zip(*runs[runner]):  # the full sync of each run, then the incremental one
                    r = median_row(same)
                    r["people"], r["runner"], r["latency"] = people, runner, latency
                    rows.append(r)
    print_rows(rows, args)
    if args.chart:
        chart(rows, args.chart)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
