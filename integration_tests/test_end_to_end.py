"""The connector as a user runs it (`python main.py`, and Airbyte's manifest runner) against
the fake Northpass server on 127.0.0.1: every record exactly once, clear failures, no key leaks."""

import json
import re
import subprocess

import pytest

from integration_tests.connector import PYTHON, ROOT, catalog_for, run_connector
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
def test_the_request_budget_fits_other_ways_of_counting_ten_a_second(school, limiter, burst, runner):
    """Northpass does not say how it counts its 10 requests/second: per clock second, or by a
    token bucket holding fewer than 10 (a burst of 10 at once draws 429s from one holding 5)."""
    with FakeNorthpass(school, api_key=API_KEY, max_limit=40, rate_limit=10, limiter=limiter, burst=burst) as server:
        run = run_connector("read", _config(server), catalog_for(SEED_STREAMS), runner=runner)
        assert run.returncode == 0, run.output()
        assert len(run.records("people")) == len(school.people)
        assert server.count(status=429) <= 0.01 * server.count() + 1, server.stats()  # 3 of 19 before


def test_check_succeeds_with_one_small_request(server, runner):
    run = run_connector("check", _config(server), runner=runner)

    assert run.connection_status()["status"] == "SUCCEEDED"
    assert [(r.path, r.query.get("limit")) for r in server.requests] == [("/v2/people", "1")]


def test_forbidden_course_is_skipped_with_a_warning_and_the_sync_completes(server, school, runner):
    forbidden = sorted(school.courses)[0]
    server.forbid(rf"^/v2/courses/{forbidden}/enrollments$")
    run = run_connector("read", _config(server), catalog_for(["course_enrollments"]), runner=runner)

    assert run.returncode == 0, run.output()
    assert {r["course_id"] for r in run.records()} <= set(school.courses) - {forbidden}
    expected = [e["id"] for c in school.courses if c != forbidden for e in school.enrollments.get(c, [])]
    assert sorted(r["id"] for r in run.records()) == sorted(expected)
    assert any(forbidden in line and "403" in line for line in run.logs("WARN"))


def test_transient_faults_are_retried_and_nothing_is_lost(server, school, runner):
    for kind in ("503", "reset", "html", "no_data", "500"):
        server.inject(r"^/v2/people$", kind)
    run = run_connector("read", _config(server, max_retries=6), catalog_for(["people"]), runner=runner)

    assert run.returncode == 0, run.output()
    assert sorted(r["id"] for r in run.records()) == _expected_ids(school)["people"]


def test_a_page_that_keeps_failing_fails_the_sync_loudly_naming_stream_and_path(server, runner):
    server.inject(r"^/v2/people$", "502", times=1000)
    run = run_connector("read", _config(server, max_retries=1), catalog_for(["people"]), runner=runner)

    assert run.returncode != 0
    stream_errors = [e for e in run.errors() if e.get("stream_descriptor")]
    assert stream_errors and stream_errors[0]["stream_descriptor"]["name"] == "people"
    assert "/v2/people" in stream_errors[0]["message"]
    assert "Traceback" not in run.stdout.replace("\\n", "\n").split("LOG")[0]
    _assert_no_secret(run)


def test_wrong_key_fails_check_and_read_as_config_errors_without_printing_the_key(server, runner):
    wrong = {**_config(server), "api_key": "wrong-key-d41d8cd98f"}
    check = run_connector("check", wrong, runner=runner)
    read = run_connector("read", wrong, catalog_for(["people"]), runner=runner)

    assert check.connection_status()["status"] == "FAILED"
    assert "API key was rejected" in check.connection_status()["message"]
    assert read.returncode != 0
    assert any(e["failure_type"] == "config_error" and "API key was rejected" in e["message"] for e in read.errors())
    for run in (check, read):
        assert "wrong-key-d41d8cd98f" not in run.output()


@pytest.mark.parametrize("base_url", ["http://api.northpass.com", "http://192.168.1.10:8080"])
def test_plain_http_to_another_host_is_refused_before_any_request(server, base_url, runner):
    config = {**_config(server), "base_url": base_url}
    check = run_connector("check", config, runner=runner)
    read = run_connector("read", config, catalog_for(["people"]), runner=runner)

    assert check.connection_status()["status"] == "FAILED"
    assert "unencrypted" in check.connection_status()["message"]
    assert read.returncode != 0
    assert [e["failure_type"] for e in read.errors()][:1] == ["config_error"]
    for run in (check, read):
        _assert_no_secret(run)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"page_size": "abc"}, "'abc' is not of type 'integer'"),  # the spec's bounds: the CDK's words
        ({"num_workers": 0}, "0 is less than the minimum of 2"),
        ({"start_date": "31/01/2024"}, "start_date '31/01/2024' is not an ISO 8601 date"),  # the manifest's own
    ],
)
def test_malformed_config_gets_a_clear_message_and_a_non_zero_read(server, overrides, words, runner):
    config = _config(server, **overrides)
    check = run_connector("check", config, runner=runner)
    read = run_connector("read", config, catalog_for(["people"]), runner=runner)

    assert check.connection_status()["status"] == "FAILED"
    assert words in check.connection_status()["message"]
    assert read.returncode != 0
    errors = read.errors()
    assert errors and errors[0]["failure_type"] == "config_error" and words in errors[0]["message"]
    assert server.count() == 0
    for run in (check, read):
        assert not re.search(r"^Traceback", run.stderr, re.M), run.stderr
        _assert_no_secret(run)


def test_unreadable_config_file_is_refused_without_a_traceback(tmp_path):
    """main.py only: the manifest runner takes its manifest from the config, so a config file it
    cannot read is the platform's failure, not the connector's."""
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
