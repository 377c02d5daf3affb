"""people: JSON:API records, read in updated_at order by key (see test_incremental.py for state)."""

import requests_mock

from unit_tests.harness import record_data, run_read
from unit_tests.northpass_builders import API_KEY, NorthpassRequest, config, ok, page, person, resource_id


def test_full_refresh_walks_by_key_moving_the_filter_to_the_last_updated_at():
    with requests_mock.Mocker() as http:
        first = NorthpassRequest.people_by_key().mock(http, ok(page([person(n) for n in range(100)], True)))
        # person(99) is the last of page 1; the next request starts at its updated_at, page 1 again.
        second = NorthpassRequest.people_by_key(person(99)["attributes"]["updated_at"]).mock(
            http, ok(page([person(n) for n in range(99, 137)]))
        )
        output = run_read(config(), ["people"])

    ids = [r["id"] for r in record_data(output, "people")]
    assert ids == [resource_id("people", n) for n in range(137)], "person 99 is not emitted twice"
    assert (first.call_count, second.call_count) == (1, 1)


def test_a_walk_without_json_api_links_goes_on_after_a_full_page_and_stops_at_a_short_one():
    with requests_mock.Mocker() as http:
        first = NorthpassRequest.people_by_key(limit=3).mock(http, ok({"data": [person(n) for n in range(3)]}))
        last = NorthpassRequest.people_by_key(person(2)["attributes"]["updated_at"], limit=3).mock(
            http, ok({"data": [person(n) for n in range(2, 4)]})
        )
        output = run_read(config(page_size=3), ["people"])

    assert [r["id"] for r in record_data(output, "people")] == [resource_id("people", n) for n in range(4)]
    assert (first.call_count, last.call_count) == (1, 1)


def test_a_walk_without_json_api_links_clamped_below_page_size_goes_on_while_pages_are_that_full():
    stamp = lambda n: person(n)["attributes"]["updated_at"]  # noqa: E731
    with requests_mock.Mocker() as http:
        requests = [
            NorthpassRequest.people_by_key(limit=5).mock(http, ok({"data": [person(n) for n in range(3)]})),
            NorthpassRequest.people_by_key(stamp(2), limit=5).mock(http, ok({"data": [person(n) for n in range(2, 5)]})),
            NorthpassRequest.people_by_key(stamp(4), limit=5).mock(http, ok({"data": [person(n) for n in range(4, 6)]})),
        ]
        output = run_read(config(page_size=5), ["people"])

    assert [r["id"] for r in record_data(output, "people")] == [resource_id("people", n) for n in range(6)]
    assert [r.call_count for r in requests] == [1, 1, 1]


def test_start_date_is_the_first_lower_bound_in_full_refresh():
    with requests_mock.Mocker() as http:
        # The newest page does not reach back to start_date: the walk starts there.
        NorthpassRequest.people_unfiltered("-updated_at").mock(http, ok(page([person(2, updated_at="2024-03-01T00:00:00Z")], True)))
        request = NorthpassRequest.people_by_key("2024-01-31T00:00:00Z").mock(
            http, ok(page([person(1, updated_at="2024-02-01T00:00:00Z")]))
        )
        NorthpassRequest.people_unfiltered("updated_at").mock(http, ok(page([person(0, updated_at="2020-01-01T00:00:00Z")], True)))
        run_read(config(start_date="2024-01-31"), ["people"])

    assert request.call_count == 1


def test_base_url_with_a_path_prefix_and_trailing_slash():
    with requests_mock.Mocker() as http:
        request = (
            NorthpassRequest.people_by_key()
            .with_base_url("https://proxy.example.com/northpass")
            .mock(http, ok(page([person(1)])))
        )
        run_read(config(base_url="https://proxy.example.com/northpass/"), ["people"])

    assert request.call_count == 1


def test_record_lifts_attributes_and_keeps_json_api_members():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_by_key().mock(http, ok(page([person(7)])))
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
        request = NorthpassRequest.people_by_key().mock(http, ok(page([person(1)])))
        run_read(config(), ["people"])

    sent = request.last_request
    assert sent.headers["X-Api-Key"] == API_KEY
    assert sent.headers["Accept"] == "application/json"
