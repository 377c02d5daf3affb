"""Incremental people (and every updated_at stream): read by key, checkpointed, tie-safe,
correct when the server ignores the filter or the sort."""

import pytest
import requests_mock

from airbyte_cdk.models import FailureType, SyncMode, Type
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_northpass.components import UpdatedAtState
from unit_tests.harness import log_lines, record_data, run_read
from unit_tests.northpass_builders import NorthpassRequest, config, ok, page, person, resource_id, status

T = "2024-03-01T12:00:00Z"  # a bulk import's second


def _updated(n):
    return person(n)["attributes"]["updated_at"]


def _read(state=None, **cfg):
    return run_read(config(**cfg), ["people"], state=state, sync_mode=SyncMode.incremental)


def _states(output):
    return [m.state.stream.stream_state.updated_at for m in output.state_messages]


def _no_nulls(http, limit=100, ascending=True):
    """The probes for records without updated_at, answering that each order begins with a dated one."""
    probes = [NorthpassRequest.people_unfiltered("-updated_at", limit=limit).mock(http, ok(page([person(999, updated_at="2030-01-01T00:00:00Z")], True)))]
    if ascending:
        probes.append(NorthpassRequest.people_unfiltered("updated_at", limit=limit).mock(http, ok(page([person(0)], True))))
    return probes


def test_an_incremental_sync_with_fewer_changes_than_a_page_costs_the_newest_page_and_the_oldest():
    with requests_mock.Mocker() as http:
        newest = NorthpassRequest.people_unfiltered("-updated_at").mock(
            http, ok(page([person(n) for n in range(40, 20, -1)], True))  # back past the state
        )
        oldest = NorthpassRequest.people_unfiltered("updated_at").mock(http, ok(page([person(0)], True)))
        output = _read(state={"people": {"updated_at": _updated(30)}})

    assert newest.call_count == oldest.call_count == 1 and http.call_count == 2
    assert sorted(r["id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in range(30, 41))
    assert _states(output)[-1] == _updated(40)


def test_an_incremental_sync_with_more_changes_than_a_page_walks_by_key_from_the_state():
    with requests_mock.Mocker() as http:
        newest = NorthpassRequest.people_unfiltered("-updated_at", limit=5)
        newest.mock(http, ok(page([person(n) for n in range(40, 35, -1)], True)))
        walk = [
            NorthpassRequest.people_by_key(_updated(30), limit=5).mock(http, ok(page([person(n) for n in range(30, 35)], True))),
            NorthpassRequest.people_by_key(_updated(34), limit=5).mock(http, ok(page([person(n) for n in range(34, 39)], True))),
            NorthpassRequest.people_by_key(_updated(38), limit=5).mock(http, ok(page([person(n) for n in range(38, 41)]))),
        ]
        oldest = NorthpassRequest.people_unfiltered("updated_at", limit=5).mock(http, ok(page([person(0)], True)))
        output = _read(state={"people": {"updated_at": _updated(30)}}, page_size=5)

    assert [w.call_count for w in walk] == [1, 1, 1] and oldest.call_count == 1 and http.call_count == 5
    ids = [r["id"] for r in record_data(output)]
    assert ids == [resource_id("people", n) for n in range(30, 41)], "in updated_at order, each once"
    assert _states(output)[-1] == _updated(40)


def test_state_is_checkpointed_after_every_page_never_ahead_of_emitted_records():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_by_key().mock(http, ok(page([person(n) for n in range(100)], True)))
        NorthpassRequest.people_by_key(_updated(99)).mock(http, ok(page([person(n) for n in range(99, 199)], True)))
        NorthpassRequest.people_by_key(_updated(198)).mock(http, ok(page([person(n) for n in range(198, 250)])))
        _no_nulls(http, ascending=False)  # the walk's own first page is the ascending one
        output = _read()

    # (the CDK repeats the final state once more at the end of the stream)
    assert list(dict.fromkeys(_states(output))) == [_updated(99), _updated(198), _updated(249)]
    emitted = set()
    for message in output.records_and_state_messages:
        if message.type == Type.RECORD:
            emitted.add(message.record.data["updated_at"])
        else:
            checkpoint = message.state.stream.stream_state.updated_at
            older = {_updated(n) for n in range(250) if _updated(n) < checkpoint}
            assert older <= emitted, f"state {checkpoint} ran ahead of records not yet emitted"
    assert len(record_data(output)) == 250, "boundary records are emitted once"


def test_a_tie_group_larger_than_a_page_is_read_by_id_then_the_walk_goes_on_after_it():
    tied = [person(n, updated_at=T) for n in range(1, 6)]
    by_id = sorted(tied, key=lambda p: p["id"])
    ids = [p["id"] for p in by_id]
    before, after = person(0, updated_at="2024-02-01T00:00:00Z"), person(6, updated_at="2024-04-01T00:00:00Z")

    def tie_request(after_id=None):
        request = NorthpassRequest("people").with_limit(2).with_page(1).with_sort("id").with_filter("updated_at", "eq", T)
        return request.with_filter("id", "gt", after_id) if after_id else request

    with requests_mock.Mocker() as http:
        NorthpassRequest.people_by_key(limit=2).mock(http, ok(page([before, tied[0]], True)))
        NorthpassRequest.people_by_key(T, limit=2).mock(http, ok(page(tied[0:2], True)))  # no progress: a tie
        tie_request().mock(http, ok(page(by_id[0:2], True)))
        tie_request(ids[1]).mock(http, ok(page(by_id[2:4], True)))
        tie_request(ids[3]).mock(http, ok(page(by_id[4:5])))
        NorthpassRequest.people_by_key(T, operator="gt", limit=2).mock(http, ok(page([after])))
        _no_nulls(http, limit=2, ascending=False)
        output = _read(page_size=2)

    emitted = [r["id"] for r in record_data(output)]
    assert sorted(emitted) == sorted([before["id"], *ids, after["id"]])
    assert len(emitted) == len(set(emitted)), "each tied person exactly once"
    assert _states(output)[-1] == "2024-04-01T00:00:00Z"


def test_a_tie_group_is_read_by_page_number_until_a_pass_finds_no_one_new_when_id_paging_is_ignored():
    tied = [person(n, updated_at=T) for n in range(1, 6)]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at", limit=2).mock(http, ok(page(tied[0:2], True)))
        NorthpassRequest.people_unfiltered("updated_at", limit=2).mock(http, ok(page([person(0)], True)))
        NorthpassRequest.people_by_key(T, limit=2).mock(http, ok(page(tied[0:2], True)))
        # The server ignores sort=id and filter[id]: same order as before.
        NorthpassRequest("people").with_limit(2).with_page(1).with_sort("id").with_filter("updated_at", "eq", T).mock(
            http, ok(page(tied[0:2], True))
        )
        by_page = NorthpassRequest("people").with_sort("updated_at").with_filter("updated_at", "eq", T).with_limit(2)
        pages = [
            by_page.with_page(1).mock(http, ok(page(tied[0:2], True))),
            by_page.with_page(2).mock(http, ok(page(tied[2:4], True))),
            by_page.with_page(3).mock(http, ok(page(tied[4:5]))),
        ]
        NorthpassRequest.people_by_key(T, operator="gt", limit=2).mock(http, ok(page([])))
        output = _read(state={"people": {"updated_at": T}}, page_size=2)

    emitted = [r["id"] for r in record_data(output)]
    assert sorted(emitted) == sorted(p["id"] for p in tied) and len(emitted) == 5
    assert [p.call_count for p in pages] == [2, 2, 2], "a second pass proves no one was hidden"
    assert any("does not page by id" in line for line in log_lines(output, "WARN"))


def test_a_server_ignoring_the_filter_is_detected_and_read_whole_with_one_warning():
    everyone = [person(n) for n in range(6)]  # 00:00:00 .. 00:00:05
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at", limit=3).mock(http, ok(page(everyone[5:2:-1], True)))
        NorthpassRequest.people_by_key(_updated(3), limit=3).mock(http, ok(page(everyone[0:3], True)))
        NorthpassRequest.people().with_limit(3).with_page(1).mock(http, ok(page(everyone[0:3], True)))
        NorthpassRequest.people().with_limit(3).with_page(2).mock(http, ok(page(everyone[3:6])))
        output = _read(state={"people": {"updated_at": _updated(3)}}, page_size=3)

    assert [r["id"] for r in record_data(output)] == [resource_id("people", n) for n in (3, 4, 5)]
    warnings = [w for w in log_lines(output, "WARN") if "ignored filter[updated_at]" in w]
    assert len(warnings) == 1
    assert _states(output)[-1] == _updated(5)


def test_a_filter_found_ignored_after_the_first_page_reads_the_list_whole_from_where_the_read_began():
    everyone = [person(n) for n in range(6)]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_by_key(limit=3).mock(http, ok(page(everyone[0:3], True)))  # no filter yet
        # From the second request on the filter is ignored: page 1 again, before the boundary.
        NorthpassRequest.people_by_key(_updated(2), limit=3).mock(http, ok(page(everyone[0:3], True)))
        NorthpassRequest.people().with_limit(3).with_page(1).mock(http, ok(page(everyone[0:3], True)))
        NorthpassRequest.people().with_limit(3).with_page(2).mock(http, ok(page(everyone[3:6])))
        output = _read(page_size=3)

    # What the walk read before the filter proved ignored is not trusted: the scan reads it again, and
    # emits what is not the same as a record emitted already.
    emitted = [r["id"] for r in record_data(output)]
    assert emitted == [resource_id("people", n) for n in range(6)]
    assert any("ignored filter[updated_at]" in w for w in log_lines(output, "WARN"))
    assert set(_states(output)) == {_updated(5)}, "no checkpoint before the filter was proven; the final state"


def test_a_server_ignoring_the_sort_is_detected_and_read_whole():
    shuffled = [person(n) for n in (4, 1, 3, 0, 2)]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_by_key(limit=5).mock(http, ok(page(shuffled, True)))
        NorthpassRequest.people().with_limit(5).with_page(1).mock(http, ok(page(shuffled, True)))
        NorthpassRequest.people().with_limit(5).with_page(2).mock(http, ok(page([person(5)])))
        output = _read(page_size=5)

    assert sorted(r["id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in range(6))
    assert any("ignored sort=updated_at" in w for w in log_lines(output, "WARN"))
    assert _states(output)[-1] == _updated(5)


def test_a_server_refusing_the_filter_is_read_whole_by_page_number_with_one_warning():
    everyone = [person(n) for n in range(6)]
    refused = status(400, {"errors": [{"status": "400", "title": "Filter not allowed", "detail": "updated_at is not allowed."}]})
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at", limit=3).mock(http, ok(page(everyone[5:2:-1], True)))
        keyset = NorthpassRequest.people_by_key(_updated(3), limit=3).mock(http, refused)
        first = NorthpassRequest.people().with_limit(3).with_page(1).mock(http, ok(page(everyone[0:3], True)))
        second = NorthpassRequest.people().with_limit(3).with_page(2).mock(http, ok(page(everyone[3:6])))
        output = _read(state={"people": {"updated_at": _updated(3)}}, page_size=3)

    assert (keyset.call_count, first.call_count, second.call_count) == (1, 1, 1), "a 400 is not retried"
    assert [r["id"] for r in record_data(output)] == [resource_id("people", n) for n in (3, 4, 5)]
    warnings = [w for w in log_lines(output, "WARN") if "reading the whole list" in w]
    assert len(warnings) == 1 and "updated_at is not allowed." in warnings[0]
    assert _states(output)[-1] == _updated(5)


def test_a_server_refusing_the_sort_from_the_first_page_is_read_whole():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_by_key(limit=2).mock(http, status(400, {"errors": [{"title": "Invalid sort criteria"}]}))
        NorthpassRequest.people().with_limit(2).with_page(1).mock(http, ok(page([person(1), person(0)], True)))
        NorthpassRequest.people().with_limit(2).with_page(2).mock(http, ok(page([person(2)])))
        output = _read(page_size=2)

    assert sorted(r["id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in range(3))
    assert any("Invalid sort criteria" in w for w in log_lines(output, "WARN"))


def test_a_refused_page_number_read_fails_the_stream_saying_what_northpass_said():
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_by_key(limit=500).mock(http, status(400, {"errors": [{"detail": "limit must be at most 100"}]}))
        NorthpassRequest.people().with_limit(500).with_page(1).mock(http, status(400, {"errors": [{"detail": "limit must be at most 100"}]}))
        output = run_read(config(page_size=500), ["people"], sync_mode=SyncMode.incremental, expect_failure=True)

    assert not record_data(output)
    errors = [m.trace.error for m in output.errors]
    assert any("limit must be at most 100" in e.message and "page_size" in e.message for e in errors), errors
    assert any(e.failure_type == FailureType.system_error for e in errors)


def test_a_malformed_state_is_a_config_error_before_any_request():
    with requests_mock.Mocker() as http:
        output = run_read(
            config(), ["people"], state={"people": {"updated_at": "last tuesday"}}, sync_mode=SyncMode.incremental,
            expect_failure=True,
        )
        assert http.call_count == 0
    (failure,) = [e.trace.error for e in output.errors][:1]
    assert failure.failure_type == FailureType.config_error
    assert "people" in failure.message and "last tuesday" in failure.message


@pytest.mark.parametrize(
    "state, expected",
    [
        ({"updated_at": "2024-05-01T10:00:00Z"}, {"updated_at": "2024-05-01T10:00:00Z"}),
        ({"updated_at": "2024-05-01"}, {"updated_at": "2024-05-01T00:00:00Z"}),
        ({"updated_at": "2024-05-01T12:00:00+02:00"}, {"updated_at": "2024-05-01T10:00:00Z"}),
        ({"updated_at": "2024-05-01T10:00:00.250Z"}, {"updated_at": "2024-05-01T10:00:00Z"}),
    ],
)
def test_state_shape_is_normalised_to_utc_seconds(state, expected):
    migration = UpdatedAtState(parameters={"name": "people"})
    assert migration.should_migrate(state)
    assert migration.migrate(state) == expected


@pytest.mark.parametrize("state", [{"updated_at": None}, {"updated_at": 3}, {"cursor": "2024-01-01"}, {"updated_at": "x", "y": 1}])
def test_foreign_or_malformed_state_is_refused_with_a_config_error(state):
    with pytest.raises(AirbyteTracedException) as raised:
        UpdatedAtState(parameters={"name": "people"}).migrate(state)
    assert raised.value.failure_type == FailureType.config_error


def test_the_cdk_concurrent_state_format_is_left_to_the_cdk():
    assert not UpdatedAtState(parameters={"name": "people"}).should_migrate({"state_type": "date-range", "slices": []})
    assert not UpdatedAtState(parameters={"name": "people"}).should_migrate({})
