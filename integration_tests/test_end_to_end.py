"""The connector as a user runs it (`python main.py`, and Airbyte's manifest runner) against
the fake Northpass server on 127.0.0.1: every record exactly once, clear failures, no key leaks."""

import json
import re
import subprocess
import time

import pytest

from integration_tests.connector import PYTHON, RUNNERS, ROOT, catalog_for, run_connector
from integration_tests.fake_northpass import FakeNorthpass, School

API_KEY = "e2e-secret-key-7c1d9b2a"
SEED_STREAMS = ["people", "courses", "course_enrollments"]


@pytest.fixture(scope="module")
def school():
    return School.generate(people=230, courses=9, enrollments=300, groups=3, learning_paths=2, categories=2, seed=11)


@pytest.fixture
def server(school):
    # max_limit below the connector's page size: the server clamps limit=100 to 40 silently.
    with FakeNorthpass(school, api_key=API_KEY, max_limit=40, rate_limit=10) as running:
        yield running


def _config(server, **overrides):
    return {"api_key": API_KEY, "base_url": server.url, "max_retries": 3, **overrides}


def _expected_ids(school):
    with school.lock:
        enrollments = [e["id"] for course_id in school.courses for e in school.enrollments.get(course_id, [])]
        return {
            "people": sorted(school.people),
            "courses": sorted(school.courses),
            "course_enrollments": sorted(enrollments),
        }


def _assert_no_secret(run):
    assert API_KEY not in run.output()


@pytest.mark.parametrize("runner", RUNNERS)
def test_full_refresh_emits_every_record_of_every_stream_exactly_once(server, school, runner):
    discovered = run_connector("discover", _config(server), runner=runner)
    assert discovered.returncode == 0, discovered.output()
    run = run_connector("read", _config(server), catalog_for(SEED_STREAMS, discovered=discovered), runner=runner)

    assert run.returncode == 0, run.output()
    expected = _expected_ids(school)
    for stream in SEED_STREAMS:
        assert sorted(r["id"] for r in run.records(stream)) == expected[stream], stream
    assert server.count(status=429) <= 0.01 * server.count() + 1
    _assert_no_secret(run)


@pytest.mark.parametrize("limiter, burst", [("fixed", None), ("bucket", 5)])
def test_the_request_budget_fits_other_ways_of_counting_ten_a_second(school, limiter, burst):
    """Northpass does not say how it counts its 10 requests/second: per clock second, or by a
    token bucket holding fewer than 10 (a burst of 10 at once draws 429s from one holding 5)."""
    with FakeNorthpass(school, api_key=API_KEY, max_limit=40, rate_limit=10, limiter=limiter, burst=burst) as server:
        run = run_connector("read", _config(server), catalog_for(SEED_STREAMS))
        assert run.returncode == 0, run.output()
        assert len(run.records("people")) == len(school.people)
        assert server.count(status=429) <= 0.01 * server.count() + 1, server.stats()  # 3 of 19 before


def test_check_succeeds_with_one_small_request(server):
    run = run_connector("check", _config(server))

    assert run.connection_status()["status"] == "SUCCEEDED"
    assert [(r.path, r.query.get("limit")) for r in server.requests] == [("/v2/people", "1")]


def test_forbidden_course_is_skipped_with_a_warning_and_the_sync_completes(server, school):
    forbidden = sorted(school.courses)[0]
    server.forbid(rf"^/v2/courses/{forbidden}/enrollments$")
    run = run_connector("read", _config(server), catalog_for(["course_enrollments"]))

    assert run.returncode == 0, run.output()
    assert {r["course_id"] for r in run.records()} <= set(school.courses) - {forbidden}
    expected = [e["id"] for c in school.courses if c != forbidden for e in school.enrollments.get(c, [])]
    assert sorted(r["id"] for r in run.records()) == sorted(expected)
    assert any(forbidden in line and "403" in line for line in run.logs("WARN"))


def test_transient_faults_are_retried_and_nothing_is_lost(server, school):
    for kind in ("503", "reset", "html", "no_data", "500"):
        server.inject(r"^/v2/people$", kind)
    run = run_connector("read", _config(server, max_retries=6), catalog_for(["people"]))

    assert run.returncode == 0, run.output()
    assert sorted(r["id"] for r in run.records()) == _expected_ids(school)["people"]


def test_a_page_that_keeps_failing_fails_the_sync_loudly_naming_stream_and_path(server):
    server.inject(r"^/v2/people$", "502", times=1000)
    run = run_connector("read", _config(server, max_retries=1), catalog_for(["people"]))

    assert run.returncode != 0
    stream_errors = [e for e in run.errors() if e.get("stream_descriptor")]
    assert stream_errors and stream_errors[0]["stream_descriptor"]["name"] == "people"
    assert "/v2/people" in stream_errors[0]["message"]
    assert "Traceback" not in run.stdout.replace("\\n", "\n").split("LOG")[0]
    _assert_no_secret(run)


def test_wrong_key_fails_check_and_read_as_config_errors_without_printing_the_key(server):
    wrong = {**_config(server), "api_key": "wrong-key-d41d8cd98f"}
    check = run_connector("check", wrong)
    read = run_connector("read", wrong, catalog_for(["people"]))

    assert check.connection_status()["status"] == "FAILED"
    assert "API key was rejected" in check.connection_status()["message"]
    assert read.returncode != 0
    assert any(e["failure_type"] == "config_error" and "API key was rejected" in e["message"] for e in read.errors())
    for run in (check, read):
        assert "wrong-key-d41d8cd98f" not in run.output()


@pytest.mark.parametrize("base_url", ["http://api.northpass.com", "http://192.168.1.10:8080"])
def test_plain_http_to_another_host_is_refused_before_any_request(server, base_url):
    config = {**_config(server), "base_url": base_url}
    check = run_connector("check", config)
    read = run_connector("read", config, catalog_for(["people"]))

    assert check.connection_status()["status"] == "FAILED"
    assert "unencrypted" in check.connection_status()["message"]
    assert read.returncode != 0
    assert [e["failure_type"] for e in read.errors()][:1] == ["config_error"]
    for run in (check, read):
        _assert_no_secret(run)


@pytest.mark.parametrize(
    "overrides, field",
    [({"page_size": "abc"}, "page_size"), ({"start_date": "31/01/2024"}, "start_date"), ({"num_workers": 0}, "num_workers")],
)
def test_malformed_config_gets_a_clear_message_and_a_non_zero_read(server, overrides, field):
    config = _config(server, **overrides)
    check = run_connector("check", config)
    read = run_connector("read", config, catalog_for(["people"]))

    assert check.connection_status()["status"] == "FAILED"
    assert field in check.connection_status()["message"]
    assert read.returncode != 0
    errors = read.errors()
    assert errors and errors[0]["failure_type"] == "config_error" and field in errors[0]["message"]
    assert server.count() == 0
    for run in (check, read):
        assert not re.search(r"^Traceback", run.stderr, re.M), run.stderr
        _assert_no_secret(run)


def test_unreadable_config_file_is_refused_without_a_traceback(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(catalog_for(["people"])))
    check = subprocess.run([PYTHON, str(ROOT / "main.py"), "check", "--config", str(bad)], capture_output=True, text=True)
    read = subprocess.run(
        [PYTHON, str(ROOT / "main.py"), "read", "--config", str(bad), "--catalog", str(catalog)],
        capture_output=True,
        text=True,
    )

    assert '"status":"FAILED"' in check.stdout and "valid JSON" in check.stdout
    assert read.returncode != 0 and '"failure_type":"config_error"' in read.stdout
    for process in (check, read):
        assert "Traceback" not in process.stdout + process.stderr


def _repeated_requests(server):
    seen, repeated = set(), []
    for r in server.requests:
        key = (r.path, tuple(sorted(r.query.items())))
        if key in seen:
            repeated.append(key)
        seen.add(key)
    return repeated


def _early_count(run):
    """How many requests went before the CDK's first, as the connector's one log line says."""
    said = [re.match(r"(\d+) request\(s\) sent while the connector started", line) for line in run.logs()]
    counts = [int(m.group(1)) for m in said if m]
    assert len(counts) == 1, run.logs()
    return counts[0]


@pytest.mark.parametrize("start_date", [None, "2021-06-01"])
def test_every_request_sent_while_starting_is_used_by_the_sync(server, school, start_date):
    """main.py asks for the first pages before the CDK is imported (prefetch.py); a guess the CDK
    did not make the same way would be asked for again, so no request may repeat."""
    config = _config(server, **({"start_date": start_date} if start_date else {}))
    run = run_connector("read", config, catalog_for(SEED_STREAMS))

    assert run.returncode == 0, run.output()
    assert _early_count(run) >= 3  # people, courses, then enrollments of courses on its first page
    assert _repeated_requests(server) == []
    since = start_date or ""
    with school.lock:
        expected = sorted(i for i, p in school.people.items() if p["attributes"]["updated_at"] >= since)
    assert sorted(r["id"] for r in run.records("people")) == expected
    assert server.count(status=429) <= 0.01 * server.count() + 1
    _assert_no_secret(run)


def test_an_incremental_read_uses_its_early_requests_too(server, school):
    first = run_connector("read", _config(server), catalog_for(SEED_STREAMS))
    assert first.returncode == 0, first.output()
    for _ in range(5):
        school.update_person()
    catalog = catalog_for(SEED_STREAMS, sync_mode="incremental")
    for configured in catalog["streams"]:
        if configured["stream"]["name"] == "course_enrollments":
            configured["sync_mode"], configured["destination_sync_mode"] = "full_refresh", "overwrite"
    time.sleep(1.1)  # syncs are minutes apart: the first one's last second is not this one's
    server.reset_log()
    last = {s["stream"]["stream_descriptor"]["name"]: s for s in first.states()}  # each stream's last
    run = run_connector("read", _config(server), catalog, state=list(last.values()))

    assert run.returncode == 0, run.output()
    assert _early_count(run) >= 3
    assert _repeated_requests(server) == [], [(r.path, r.status) for r in server.requests]
    assert 5 <= len(run.records("people")) < len(school.people)
