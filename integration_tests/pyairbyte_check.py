#!/usr/bin/env python3
"""Read every stream of manifest.yaml through PyAirbyte into DuckDB, against the fake Northpass.

A standalone script, not a pytest module: run it with the PyAirbyte virtualenv, from any directory::

    .venv-pyairbyte/bin/python integration_tests/pyairbyte_check.py [--keep]

It starts the fake Northpass server in-process (127.0.0.1, no rate limit), builds the source
with ``airbyte.get_source(..., source_manifest=Path("<repo>/manifest.yaml"))`` (PyAirbyte
injects the ``components.py`` next to the manifest), selects every stream, reads them into
PyAirbyte's default DuckDB cache under a temporary directory, and then checks from the cache:

* each stream's row count equals what the fake school holds (streams it does not know
  yet only need at least one row), and for the known ones the set of ids matches too;
* the declared primary key (``id``, or e.g. ``group_id, person_id``) is unique per stream.

It prints a table (stream, rows, expected) and exits 0, or prints what differs and exits 1.
Offline: PyAirbyte runs with AIRBYTE_OFFLINE_MODE and DO_NOT_TRACK, and any connection or
name lookup for anything but a loopback address is refused and reported as a failure.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "manifest.yaml"
API_KEY = "test-key"
SCHOOL_SIZE = dict(people=300, courses=12, enrollments=400, groups=6, learning_paths=3,
                   categories=4, activities_per_course=3, events=300, event_burst=120, seed=7)


# --------------------------------------------------------------------------------- network guard
BLOCKED: list[str] = []  # every refused non-loopback connection or name lookup


def _loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in {"localhost", "localhost.localdomain", "ip6-localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install_network_guard() -> None:
    """Refuse any socket connection or DNS lookup that is not for a loopback address."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            BLOCKED.append(f"connect to {address!r}")
            raise ConnectionRefusedError(f"pyairbyte_check: network access to {address!r} is not allowed")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host):
            BLOCKED.append(f"name lookup of {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"pyairbyte_check: lookup of {host!r} is not allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo


# --------------------------------------------------------------------------------- expectations
def expected_ids(stream: str, school) -> list[str] | None:
    """The ids the fake school holds for a stream, or None when the stream is not known here.

    Per-parent lists count only the parents the server answers for: the fake server gives
    every course's enrollments and activities, but 403 for the properties of some courses.
    """
    s = school
    nested = lambda children, parents: [r["id"] for p in parents for r in children.get(p, [])]  # noqa: E731
    table = {
        "people": lambda: list(s.people),
        "courses": lambda: list(s.courses),
        "groups": lambda: list(s.groups),
        "learning_paths": lambda: list(s.learning_paths),
        "categories": lambda: list(s.categories),
        "course_enrollments": lambda: nested(s.enrollments, s.courses),
        "enrollments": lambda: nested(s.enrollments, s.courses),
        "course_activities": lambda: nested(s.activities, s.courses),
        "activities": lambda: nested(s.activities, s.courses),
        "learning_path_enrollments": lambda: nested(s.learning_path_enrollments, s.learning_paths),
        "course_progresses": lambda: nested(s.course_progresses, s.people),
        "person_course_progresses": lambda: nested(s.course_progresses, s.people),
        "course_properties": lambda: [r["id"] for r in s.course_property_rows()],
        "transcripts": lambda: nested(s.transcripts, s.people),
        "quizzes": lambda: list(s.quizzes),
        "activity_events": lambda: [None] * len(s.events),  # no ids: counted only
        # one row per (group, person); the row's id is the person's
        "group_memberships": lambda: [pid for pid, p in s.people.items() for _ in p["relationships"]["groups"]["data"]],
    }
    make = table.get(stream)
    return make() if make else None


def declared_stream_names() -> list[str] | None:
    """Stream names from the manifest's top-level ``streams`` list, $refs resolved (None: unknown)."""
    try:
        import yaml
        from airbyte_cdk.sources.declarative.parsers.manifest_reference_resolver import (
            ManifestReferenceResolver,
        )

        manifest = ManifestReferenceResolver().preprocess_manifest(yaml.safe_load(MANIFEST.read_text()))
        names = []
        for stream in manifest.get("streams", []):
            name = stream.get("name") or (stream.get("$parameters") or {}).get("name")
            if not name:
                return None
            names.append(name)
        return names
    except Exception:  # noqa: BLE001 - only a cross-check; discover is the source of truth
        return None


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache directory")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pyairbyte-check-"))
    # PyAirbyte reads these at import time: they must be set before `import airbyte`.
    os.environ.update({
        "AIRBYTE_OFFLINE_MODE": "1",
        "DO_NOT_TRACK": "1",
        "AIRBYTE_ENABLE_UNSAFE_CODE": "true",  # let the CDK run the injected components.py
        "AIRBYTE_CACHE_ROOT": str(work / "cache"),
        "AIRBYTE_PROJECT_DIR": str(work / "project"),
        "AIRBYTE_INSTALL_DIR": str(work / "install"),
        "AIRBYTE_LOGGING_ROOT": str(work / "logs"),
        "AIRBYTE_TEMP_DIR": str(work / "tmp"),
        "NO_LIVE_PROGRESS": "1",
    })
    (work / "tmp").mkdir()
    install_network_guard()
    sys.path.insert(0, str(REPO))
    try:
        return run(work)
    except Exception:  # noqa: BLE001 - report, then fail
        print("\nFAILED: the PyAirbyte read raised:", file=sys.stderr)
        traceback.print_exc()
        print(f"(PyAirbyte logs: {work / 'logs'})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # google-* "Python 3.11 support ends" noise
    import airbyte as ab
    from sqlalchemy import func, select

    from integration_tests.fake_northpass import FakeNorthpass, School

    school = School.generate(**SCHOOL_SIZE)
    problems: list[str] = []
    started = time.monotonic()
    with FakeNorthpass(school, api_key=API_KEY, rate_limit=None) as server:
        source = ab.get_source(
            "source-northpass",
            # the fake server runs without a rate limit here: no need to pace at 10/s
            config={"api_key": API_KEY, "base_url": server.url, "requests_per_second": 100},
            source_manifest=MANIFEST,
            streams="*",
        )
        available = sorted(source.get_available_streams())
        declared = declared_stream_names()
        if declared is not None and sorted(set(declared)) != available:
            problems.append(f"manifest declares {sorted(set(declared))} but discover lists {available}")
        cache = ab.get_default_cache()
        if not str(cache.db_path).startswith(str(work)):
            raise RuntimeError(f"the default cache {cache.db_path} is outside {work}")
        catalog = {s.stream.name: s for s in source.get_configured_catalog("*", force_full_refresh=True).streams}
        # append: keep every record as read, so duplicate ids show up instead of being merged.
        result = source.read(cache=cache, write_strategy="append", force_full_refresh=True)
        read_seconds = time.monotonic() - started
        requests = server.stats()

    rows: list[tuple[str, int, str]] = []
    with cache.processor.get_sql_connection() as conn:
        for stream in available:
            if stream not in result.streams:
                problems.append(f"{stream}: not in the read result (no table written)")
                rows.append((stream, 0, "-"))
                continue
            table = result.streams[stream].to_sql_table()
            count = conn.execute(select(func.count()).select_from(table)).scalar()
            expected = expected_ids(stream, school)
            rows.append((stream, count, "> 0" if expected is None else str(len(expected))))

            if expected is None:
                if count <= 0:
                    problems.append(f"{stream}: no rows (expected at least one)")
            elif count != len(expected):
                problems.append(f"{stream}: {count} rows, the fake school holds {len(expected)}")

            pk = [p[0] for p in (catalog[stream].primary_key or catalog[stream].stream.source_defined_primary_key or [])
                  if p] if stream in catalog else []
            if "id" not in table.c:
                if not pk or "id" in pk:  # else keyed without an id (the feed: twins share a key), counted above
                    problems.append(f"{stream}: no id column (columns: {sorted(table.c.keys())})")
                continue
            ids = [r[0] for r in conn.execute(select(table.c.id))]
            dupes = sorted(str(i) for i, n in Counter(ids).items() if n > 1)
            # `id` alone is the key only where the stream says so: a person is in several groups.
            if dupes and pk in ([], ["id"]):
                problems.append(f"{stream}: {len(ids) - len(set(ids))} duplicate ids, e.g. {dupes[:3]}")
            if None in ids:
                problems.append(f"{stream}: {ids.count(None)} rows without an id")
            if expected is not None:
                missing, extra = set(expected) - set(ids), set(ids) - set(expected)
                if missing:
                    problems.append(f"{stream}: {len(missing)} ids missing, e.g. {sorted(missing)[:3]}")
                if extra:
                    problems.append(f"{stream}: {len(extra)} ids the school does not have, e.g. {sorted(extra)[:3]}")

            if pk and pk != ["id"] and all(c in table.c for c in pk):
                cols = [table.c[c] for c in pk]
                keys = conn.execute(select(func.count()).select_from(select(*cols).distinct().subquery())).scalar()
                if keys != count:
                    problems.append(f"{stream}: {count - keys} rows share a primary key {pk}")

    width = max([len("stream")] + [len(r[0]) for r in rows])
    print(f"\n{'stream':<{width}}  {'rows':>6}  {'expected':>8}")
    print(f"{'-' * width}  {'-' * 6}  {'-' * 8}")
    for stream, count, expected in rows:
        print(f"{stream:<{width}}  {count:>6}  {expected:>8}")
    print(f"\n{len(rows)} streams, {sum(r[1] for r in rows)} rows, {requests['requests']} requests "
          f"{requests['by_status']}, read in {read_seconds:.1f}s")

    if BLOCKED:
        problems.append(f"refused {len(BLOCKED)} non-loopback network attempts: {sorted(set(BLOCKED))[:5]}")
    if problems:
        print("\nFAILED:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
