"""How the connector answers Northpass's failures: retry what is transient, fail loudly otherwise."""

import requests
import requests_mock

from airbyte_cdk.models import FailureType, Status

from unit_tests.harness import record_data, run_check, run_read
from unit_tests.northpass_builders import (
    API_KEY,
    NorthpassRequest,
    config,
    error,
    ok,
    page,
    person,
    status,
)

FAST_RETRY = {"Retry-After": "0.01"}


def _people_page_1():
    return NorthpassRequest.people_by_key()


SECOND_PAGE_FROM = person(1)["attributes"]["updated_at"]


def _failure(output):
    """The error trace of the failed stream (the CDK adds a summary trace without a stream)."""
    (failure,) = [e.trace.error for e in output.errors if e.trace.error.stream_descriptor]
    return failure


def test_401_fails_as_config_error_saying_the_key_was_rejected():
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(http, status(401, error(401, "Unauthorized")))
        output = run_read(config(), ["people"], expect_failure=True)

    assert request.call_count == 1, "a rejected key is not retried"
    failure = _failure(output)
    assert failure.failure_type == FailureType.config_error
    assert "API key was rejected" in failure.message


def test_check_with_a_rejected_key_fails_with_a_clear_message():
    with requests_mock.Mocker() as http:
        request = NorthpassRequest.people_by_key(limit=1).mock(http, status(401))
        output = run_check(config())

    (connection,) = output.connection_status_messages
    assert connection.connectionStatus.status == Status.FAILED
    assert "API key was rejected" in connection.connectionStatus.message
    assert request.call_count == 1


def test_check_costs_one_request_for_one_record():
    with requests_mock.Mocker() as http:
        request = NorthpassRequest.people_by_key(limit=1).mock(http, ok(page([person(1)], True)))
        output = run_check(config())

    (connection,) = output.connection_status_messages
    assert connection.connectionStatus.status == Status.SUCCEEDED
    assert http.call_count == request.call_count == 1


def test_429_waits_retry_after_then_succeeds():
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(http, status(429, None, **FAST_RETRY), ok(page([person(1)])))
        output = run_read(config(), ["people"])

    assert request.call_count == 2
    assert len(record_data(output)) == 1


def test_5xx_is_retried_then_succeeds():
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(
            http, status(500, None, **FAST_RETRY), status(503, None, **FAST_RETRY), ok(page([person(1)]))
        )
        output = run_read(config(), ["people"])

    assert request.call_count == 3
    assert len(record_data(output)) == 1


def test_connection_reset_and_timeout_are_retried():
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(
            http,
            {"exc": requests.exceptions.ConnectionError("Connection reset by peer")},
            {"exc": requests.exceptions.ReadTimeout("read timed out")},
            ok(page([person(1)])),
        )
        output = run_read(config(max_retries=3), ["people"])

    assert request.call_count == 3
    assert len(record_data(output)) == 1


def test_every_request_has_connect_and_read_timeouts_so_a_hung_connection_is_retried():
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(http, ok(page([person(1)])))
        run_read(config(), ["people"])

    assert request.last_request.timeout == (30, 60)


def test_html_body_in_a_200_is_retried_not_taken_as_an_empty_page():
    html = {"status_code": 200, "text": "<html><body>Bad gateway</body></html>", "headers": {"Content-Type": "text/html", **FAST_RETRY}}
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(http, html, ok(page([person(1)])))
        output = run_read(config(), ["people"])

    assert request.call_count == 2
    assert len(record_data(output)) == 1


def test_200_with_errors_and_no_data_is_retried():
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(http, ok(error(500, "try again"), **FAST_RETRY), ok(page([person(1)])))
        output = run_read(config(), ["people"])

    assert request.call_count == 2
    assert len(record_data(output)) == 1


def test_a_client_error_fails_at_once_even_with_an_html_body():
    html_422 = {"status_code": 422, "text": "<html>Unprocessable</html>", "headers": {"Content-Type": "text/html"}}
    with requests_mock.Mocker() as http:
        request = _people_page_1().mock(http, html_422)
        output = run_read(config(), ["people"], expect_failure=True)

    assert request.call_count == 1, "a client error is not retried as if it were a malformed success"
    assert "422" in _failure(output).message


def test_200_without_data_is_retried_not_taken_as_the_end():
    no_data = ok({"links": {"self": "x"}}, **FAST_RETRY)
    with requests_mock.Mocker() as http:
        _people_page_1().mock(http, ok(page([person(1)], True)))
        second = NorthpassRequest.people_by_key(SECOND_PAGE_FROM).mock(http, no_data, ok(page([person(2)])))
        output = run_read(config(), ["people"])

    assert second.call_count == 2
    assert len(record_data(output)) == 2


def test_page_that_cannot_be_read_after_retries_fails_the_sync_naming_stream_and_path():
    with requests_mock.Mocker() as http:
        _people_page_1().mock(http, ok(page([person(1)], True)))
        second = NorthpassRequest.people_by_key(SECOND_PAGE_FROM).mock(http, status(502, None, **FAST_RETRY))
        output = run_read(config(max_retries=2), ["people"], expect_failure=True)

    assert second.call_count == 3, "one try and two retries"
    failure = _failure(output)
    assert failure.stream_descriptor.name == "people"
    assert "/v2/people" in failure.message
    assert failure.failure_type != FailureType.config_error
    assert output.get_stream_statuses("people")[-1].name == "INCOMPLETE"


def test_api_key_never_appears_in_output_when_a_request_fails():
    with requests_mock.Mocker() as http:
        _people_page_1().mock(http, status(500, error(500, "Internal Server Error"), **FAST_RETRY))
        output = run_read(config(max_retries=1), ["people"], expect_failure=True)

    everything = "\n".join(str(m) for m in output.get_message_iterator())
    assert "people" in everything and API_KEY not in everything
