"""Bad config is refused with a message a person understands, before any request is sent."""

import pytest
import requests_mock

from airbyte_cdk.models import FailureType, Status

from unit_tests.harness import create_source, run_check, run_discover, run_read
from unit_tests.northpass_builders import API_KEY, NorthpassRequest, config, ok, page, person


def _check_failure(cfg):
    with requests_mock.Mocker() as http:
        output = run_check(cfg)
        assert http.call_count == 0, "no request may be sent with a refused config"
    (status,) = output.connection_status_messages
    assert status.connectionStatus.status == Status.FAILED
    return status.connectionStatus.message


@pytest.mark.parametrize(
    "base_url",
    ["http://api.northpass.com", "http://10.0.0.5:8080", "http://127.0.0.1.example.com", "http://[2001:db8::1]"],
)
def test_plain_http_to_another_host_is_refused_by_check(base_url):
    message = _check_failure(config(base_url=base_url))
    assert "http://" in message and "unencrypted" in message


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8080", "http://127.3.4.5", "http://localhost:9", "http://[::1]:8080"]
)
def test_plain_http_to_a_loopback_host_is_allowed(base_url):
    with requests_mock.Mocker() as http:
        request = NorthpassRequest.people_by_key(limit=1).with_base_url(base_url).mock(
            http, ok(page([person(1)]))
        )
        output = run_check(config(base_url=base_url))
    (status,) = output.connection_status_messages
    assert status.connectionStatus.status == Status.SUCCEEDED
    assert request.call_count == 1


def test_plain_http_to_another_host_is_refused_by_read_as_config_error():
    with requests_mock.Mocker() as http:
        output = run_read(config(base_url="http://api.northpass.com"), ["people"], expect_failure=True)
        assert http.call_count == 0
    failures = [e.trace.error for e in output.errors]
    assert failures and all(f.failure_type == FailureType.config_error for f in failures)
    assert "unencrypted" in failures[0].message


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"base_url": "ftp://api.northpass.com"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "https://api.northpass.com?x=1"}, "query"),
        ({"start_date": "2024-13-45"}, "start_date"),
        ({"start_date": "yesterday"}, "start_date"),
    ],
)
def test_malformed_base_url_or_start_date_fails_check_with_a_message_naming_the_field(overrides, words):
    message = _check_failure(config(**overrides))
    assert words in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"page_size": "abc"}, "'abc' is not of type 'integer'"),
        ({"page_size": 0}, "0 is less than the minimum of 1"),
        ({"requests_per_second": -1}, "-1 is less than the minimum of 1"),
        ({"num_workers": 500}, "500 is greater than the maximum of 20"),
    ],
)
def test_a_value_the_spec_refuses_fails_check_with_the_cdks_message(overrides, words):
    """The spec's own bounds (the UI's hints too), checked by the CDK before anything else: its
    message names the value and the bound, not the field."""
    message = _check_failure(config(**overrides))
    assert message == f"Config validation error: {words}"


def test_missing_api_key_fails_check():
    cfg = config()
    del cfg["api_key"]
    assert "api_key" in _check_failure(cfg)


@pytest.mark.parametrize(
    "start_date, lower_bound",
    [
        ("2024-01-31", "2024-01-31T00:00:00Z"),
        ("2024-01-31T10:00:00Z", "2024-01-31T10:00:00Z"),
        ("2024-01-31T10:00:00+02:00", "2024-01-31T08:00:00Z"),
    ],
)
def test_iso_dates_and_datetimes_are_accepted_and_sent_in_utc(start_date, lower_bound):
    with requests_mock.Mocker() as http:
        newest = NorthpassRequest.people_unfiltered("-updated_at", limit=1)
        newest.mock(http, ok(page([person(2, updated_at="2024-03-01T00:00:00Z")], True)))
        walk = NorthpassRequest.people_by_key(lower_bound, limit=1).mock(
            http, ok(page([person(1, updated_at="2024-02-01T00:00:00Z")]))
        )
        output = run_check(config(start_date=start_date))
    (status,) = output.connection_status_messages
    assert status.connectionStatus.status == Status.SUCCEEDED
    assert walk.call_count == 1


def test_discover_lists_every_stream_with_its_primary_key_and_sync_modes():
    output = run_discover(config())
    streams = {s.name: s for s in output.catalog.catalog.streams}
    assert {name: s.source_defined_primary_key for name, s in streams.items()} == {
        "people": [["id"]],
        "courses": [["id"]],
        "course_enrollments": [["course_id"], ["id"]],
        "groups": [["id"]],
        "group_memberships": [["group_id"], ["person_id"]],
        "learning_paths": [["id"]],
        "learning_path_enrollments": [["learning_path_id"], ["id"]],
        "categories": [["id"]],
        "course_activities": [["course_id"], ["id"]],
        "course_properties": [["course_id"], ["id"]],
        "person_course_progresses": [["person_id"], ["id"]],
        "transcripts": [["person_id"], ["resource_type"], ["resource_id"], ["attempt_number"]],
        "quizzes": [["id"]],
        "activity_events": [["person_id"], ["activity_id"], ["type"], ["created_at"]],
    }
    cursors = {name: s.default_cursor_field for name, s in streams.items() if "incremental" in [m.value for m in s.supported_sync_modes]}
    assert cursors == {**{name: ["updated_at"] for name in ("people", "courses", "groups", "learning_paths", "categories",
                                                             "person_course_progresses")},
                       "transcripts": ["last_active_at"], "activity_events": ["created_at"]}


def test_api_key_is_not_in_a_config_error():
    message = _check_failure(config(base_url="http://example.com"))
    assert API_KEY not in message


def test_the_manifest_uses_no_deprecated_cdk_field():
    """The Connector Builder warns on every test read of a manifest using a deprecated field
    (`url_base` and `path` were)."""
    source = create_source(config())
    source.streams(config())
    assert [w.message for w in source.deprecation_warnings()] == []
