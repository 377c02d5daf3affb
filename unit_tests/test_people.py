"""people: a plain list stream. Paging by `page`/`limit` until `links.next` is absent."""

import requests_mock

from unit_tests.harness import log_lines, record_data, run_read
from unit_tests.northpass_builders import (
    API_KEY,
    NorthpassRequest,
    config,
    ok,
    page,
    person,
    resource_id,
)


def test_full_refresh_reads_every_page_until_links_next_is_absent():
    with requests_mock.Mocker() as http:
        first = NorthpassRequest.people().with_limit(100).with_page(1).mock(
            http, ok(page([person(n) for n in range(100)], has_next=True))
        )
        second = NorthpassRequest.people().with_limit(100).with_page(2).mock(
            http, ok(page([person(n) for n in range(100, 137)]))
        )
        output = run_read(config(), ["people"])

    ids = [r["id"] for r in record_data(output, "people")]
    assert ids == [resource_id("people", n) for n in range(137)]
    assert (first.call_count, second.call_count) == (1, 1)


def test_short_page_with_a_next_link_is_not_the_end():
    # The server clamps limit=100 to 40 without saying so: only links.next ends the list.
    with requests_mock.Mocker() as http:
        NorthpassRequest.people().with_limit(100).with_page(1).mock(http, ok(page([person(n) for n in range(40)], True)))
        NorthpassRequest.people().with_limit(100).with_page(2).mock(http, ok(page([person(n) for n in range(40, 80)], True)))
        NorthpassRequest.people().with_limit(100).with_page(3).mock(http, ok(page([person(n) for n in range(80, 95)])))
        output = run_read(config(), ["people"])

    assert len(record_data(output, "people")) == 95


def test_empty_page_without_next_link_ends_the_stream():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people().with_limit(100).with_page(1).mock(http, ok(page([])))
        output = run_read(config(), ["people"])

    assert record_data(output, "people") == []
    assert not output.errors


def test_page_size_is_sent_as_limit():
    with requests_mock.Mocker() as http:
        request = NorthpassRequest.people().with_limit(250).with_page(1).mock(http, ok(page([person(1)])))
        run_read(config(page_size=250), ["people"])

    assert request.call_count == 1


def test_base_url_with_a_path_prefix_and_trailing_slash():
    with requests_mock.Mocker() as http:
        request = (
            NorthpassRequest.people()
            .with_base_url("https://proxy.example.com/northpass")
            .with_limit(100)
            .with_page(1)
            .mock(http, ok(page([person(1)])))
        )
        run_read(config(base_url="https://proxy.example.com/northpass/"), ["people"])

    assert request.call_count == 1


def test_record_lifts_attributes_and_keeps_json_api_members():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people().with_limit(100).with_page(1).mock(http, ok(page([person(7)])))
        output = run_read(config(), ["people"])

    (record,) = record_data(output, "people")
    source = person(7)
    assert "attributes" not in record
    # Airbyte's message serializer leaves out top-level nulls; everything else is lifted as is.
    assert {k: record.get(k) for k in source["attributes"]} == source["attributes"]
    assert record["id"] == source["id"]
    assert record["type"] == "people"
    assert record["links"] == source["links"]
    assert record["relationships"] == source["relationships"]


def test_api_key_is_sent_as_header_and_json_is_asked_for():
    with requests_mock.Mocker() as http:
        request = NorthpassRequest.people().with_limit(100).with_page(1).mock(http, ok(page([person(1)])))
        run_read(config(), ["people"])

    sent = request.last_request
    assert sent.headers["X-Api-Key"] == API_KEY
    assert sent.headers["Accept"] == "application/json"


def test_a_page_repeating_the_previous_one_is_requested_again():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people().with_limit(2).with_page(1).mock(http, ok(page([person(1), person(2)], True)))
        second = NorthpassRequest.people().with_limit(2).with_page(2).mock(
            http,
            ok(page([person(1), person(2)], True)),  # a stale cache answers page 1 again
            ok(page([person(3), person(4)], True)),
        )
        NorthpassRequest.people().with_limit(2).with_page(3).mock(http, ok(page([person(5)])))
        output = run_read(config(page_size=2), ["people"])

    ids = {r["id"] for r in record_data(output, "people")}
    assert ids == {resource_id("people", n) for n in range(1, 6)}
    assert second.call_count == 2
    assert any("repeated the previous page" in line for line in log_lines(output, "WARN"))


def test_a_page_that_keeps_repeating_fails_the_sync_instead_of_looping():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people().with_limit(2).with_page(1).mock(http, ok(page([person(1), person(2)], True)))
        second = NorthpassRequest.people().with_limit(2).with_page(2).mock(
            http, ok(page([person(1), person(2)], True))
        )
        output = run_read(config(page_size=2), ["people"], expect_failure=True)

    assert second.call_count == 3
    messages = " ".join(e.trace.error.message for e in output.errors)
    assert "page 2 of /v2/people" in messages
