"""Where Northpass differs from our guesses (../shared/northpass-api.md): a list the plan lacks, a
path spelt the other way, records without updated_at. Each costs a request or a warning, never a
record, and never the sync."""

import requests_mock

from airbyte_cdk.models import FailureType, Status, SyncMode

from unit_tests.harness import log_lines, record_data, run_check, run_read
from unit_tests.northpass_builders import NorthpassRequest, config, course, error, ok, page, person, resource_id, status


def _first_page(path, limit=100):
    """A key-paged list's first request (unfiltered)."""
    return NorthpassRequest(path).with_limit(limit).with_page(1).with_sort("updated_at")


def _list_page(path, number=1):
    return NorthpassRequest(path).with_limit(100).with_page(number)


def _warnings(output, *words):
    return [w for w in log_lines(output, "WARN") if all(word in w for word in words)]


def _learning_path(n):
    return {"id": f"lp{n}", "type": "learning_paths", "attributes": {"name": f"Path {n}", "updated_at": f"2024-01-0{n}T00:00:00Z"}}


def _lp_enrollment(n):
    return {"id": str(n), "type": "learning_path_enrollments", "attributes": {"person_id": f"p{n}", "progress": 10}}


# ----------------------------------------------------------------------------- a list the plan lacks


def test_a_list_refused_on_its_first_request_is_skipped_with_one_warning_and_the_sync_goes_on():
    with requests_mock.Mocker() as http:
        refused = _first_page("categories").mock(http, status(403, error(403, "Your plan does not include categories")))
        _first_page("courses").mock(http, ok(page([course(1)])))
        output = run_read(config(), ["categories", "courses"])

    assert refused.call_count == 1, "a refusal is not retried"
    assert [r["id"] for r in record_data(output, "courses")] == [resource_id("courses", 1)]
    assert not record_data(output, "categories")
    (warning,) = _warnings(output, "categories")
    assert "/v2/categories" in warning and "HTTP 403" in warning and "Your plan does not include categories" in warning
    assert not output.errors


def test_a_refused_list_keeps_its_state():
    saved = {"updated_at": "2024-05-01T00:00:00Z"}
    with requests_mock.Mocker() as http:
        NorthpassRequest("categories").with_limit(100).with_page(1).with_sort("-updated_at").mock(http, status(404, error(404, "Not found")))
        output = run_read(config(), ["categories"], state={"categories": saved}, sync_mode=SyncMode.incremental)

    assert not output.errors
    assert {m.state.stream.stream_state.updated_at for m in output.state_messages} == {saved["updated_at"]}
    assert len(_warnings(output, "Stream categories skipped", "HTTP 404")) == 1


def test_a_refused_parent_is_one_warning_however_many_streams_read_it():
    with requests_mock.Mocker() as http:
        _first_page("courses").mock(http, status(403, error(403, "Forbidden")))
        _list_page("properties/courses").mock(http, status(404, error(404, "No route")))  # each course's, then
        output = run_read(config(), ["courses", "course_enrollments", "course_activities", "course_properties"])

    assert not output.errors and not output.records
    assert len(_warnings(output, "Stream courses skipped")) == 1 and len(_warnings(output, "/v2/courses")) == 1
    assert http.call_count <= 5, "each reader of the refused list asks at most once"


def test_with_skipping_turned_off_a_refused_list_fails_the_sync_as_a_config_error():
    with requests_mock.Mocker() as http:
        _first_page("categories").mock(http, status(403, error(403, "Forbidden")))
        output = run_read(config(skip_unavailable_streams=False), ["categories"], expect_failure=True)

    (failure,) = [e.trace.error for e in output.errors if e.trace.error.stream_descriptor]
    assert failure.failure_type == FailureType.config_error
    assert "/v2/categories" in failure.message and "HTTP 403" in failure.message and "Forbidden" in failure.message


def test_check_fails_when_its_own_stream_is_refused():
    with requests_mock.Mocker() as http:
        _first_page("people", limit=1).mock(http, status(403, error(403, "This key may not read people")))
        output = run_check(config())

    (connection,) = output.connection_status_messages
    assert connection.connectionStatus.status == Status.FAILED
    assert "This key may not read people" in connection.connectionStatus.message


def test_a_list_refused_after_its_first_page_fails_the_stream_loudly():
    with requests_mock.Mocker() as http:
        _first_page("people").mock(http, ok(page([person(1)], True)))
        later = person(1)["attributes"]["updated_at"]
        _first_page("people").with_filter("updated_at", "gteq", later).mock(http, status(404, error(404, "Not found")))
        output = run_read(config(), ["people"], expect_failure=True)

    (failure,) = [e.trace.error for e in output.errors if e.trace.error.stream_descriptor]
    assert "went away while it was read" in failure.message and "/v2/people" in failure.message


def test_a_child_list_refused_after_its_first_page_fails_the_stream_loudly():
    with requests_mock.Mocker() as http:
        _first_page("courses").mock(http, ok(page([course(1)])))
        path = f"courses/{resource_id('courses', 1)}/enrollments"
        _list_page(path, 1).mock(http, ok(page([{"id": "e1", "type": "enrollments", "attributes": {}}], True)))
        _list_page(path, 2).mock(http, status(403, error(403, "Forbidden")))
        output = run_read(config(), ["course_enrollments"], expect_failure=True)

    assert any("went away while it was read" in e.trace.error.message for e in output.errors)


# ----------------------------------------------------------------------------- two spellings of a path


def test_learning_paths_fall_back_to_the_underscore_path_once_and_their_enrollments_follow():
    with requests_mock.Mocker() as http:
        hyphen = _first_page("learning-paths").mock(http, status(404, error(404, "Not found")))
        underscore = _first_page("learning_paths").mock(http, ok(page([_learning_path(1), _learning_path(2)])))
        children = [_list_page(f"learning_paths/lp{n}/enrollments").mock(http, ok(page([_lp_enrollment(n)]))) for n in (1, 2)]
        output = run_read(config(), ["learning_paths", "learning_path_enrollments"])

    assert not output.errors
    assert hyphen.call_count == 1, "the hyphen is tried once per sync, not once per reader"
    assert underscore.call_count == 2  # the stream, and the parent of the enrollments
    assert [c.call_count for c in children] == [1, 1]
    assert sorted((r["learning_path_id"], r["id"]) for r in record_data(output, "learning_path_enrollments")) == [
        ("lp1", "1"),
        ("lp2", "2"),
    ]
    assert not _warnings(output, "learning")


def test_learning_paths_at_the_hyphenated_path_never_ask_for_the_other():
    with requests_mock.Mocker() as http:
        _first_page("learning-paths").mock(http, ok(page([_learning_path(1)])))
        _list_page("learning-paths/lp1/enrollments").mock(http, ok(page([_lp_enrollment(1)])))
        output = run_read(config(), ["learning_paths", "learning_path_enrollments"])

    assert len(record_data(output)) == 2
    assert all("learning_paths" not in r.path for r in http.request_history)


def test_an_account_without_learning_paths_is_skipped_naming_both_paths():
    with requests_mock.Mocker() as http:
        for path in ("learning-paths", "learning_paths"):
            _first_page(path).mock(http, status(404, error(404, "Not found")))
        output = run_read(config(), ["learning_paths", "learning_path_enrollments"])

    assert not output.errors and not output.records
    (warning,) = _warnings(output, "learning_paths")
    assert "/v2/learning-paths and /v2/learning_paths" in warning


def _group(n):
    return {"id": f"g{n}", "type": "groups", "attributes": {"name": f"Group {n}", "updated_at": f"2024-01-0{n}T00:00:00Z"}}


def _membership(n, person_id):
    return {
        "id": f"m{n}",
        "type": "memberships",
        "attributes": {"created_at": "2024-01-01T00:00:00Z"},
        "relationships": {"person": {"data": {"type": "people", "id": person_id}}},
    }


def test_a_groups_people_fall_back_to_memberships_and_the_person_comes_from_the_membership():
    with requests_mock.Mocker() as http:
        _first_page("groups").mock(http, ok(page([_group(1), _group(2), _group(3)])))
        gone = [_list_page(f"groups/g{n}/people").mock(http, status(404, error(404, "Not found"))) for n in (1, 2, 3)]
        deleted = _list_page("groups/g1/memberships").mock(http, status(404, error(404, "No such group")))
        members = [_list_page(f"groups/g{n}/memberships").mock(http, ok(page([_membership(n, f"p{n}")]))) for n in (2, 3)]
        output = run_read(config(num_workers=2), ["group_memberships"])

    rows = sorted((r["group_id"], r["person_id"], r["id"]) for r in record_data(output))
    assert rows == [("g2", "p2", "m2"), ("g3", "p3", "m3")]
    assert deleted.call_count == 1 and [m.call_count for m in members] == [1, 1]
    assert sum(g.call_count for g in gone) <= 2, "once memberships answered, /people is not asked again"
    assert len(_warnings(output, "skipping /v2/groups/g1/memberships")) == 1


# ----------------------------------------------------------------------------- records without updated_at


def _undated(n):
    return person(n, updated_at=None)


def test_full_refresh_finds_records_without_updated_at_sorted_last():
    """Postgres: nulls last ascending, first descending; the walk never reaches them by key."""
    with requests_mock.Mocker() as http:
        _first_page("people", limit=2).mock(http, ok(page([person(1), person(2)], True)))
        after = person(2)["attributes"]["updated_at"]
        _first_page("people", limit=2).with_filter("updated_at", "gteq", after).mock(http, ok(page([person(2), person(3)])))
        newest_first = NorthpassRequest.people_unfiltered("-updated_at", limit=2)
        first = newest_first.mock(http, ok(page([_undated(8), _undated(9)], True)))
        second = NorthpassRequest.people_unfiltered("-updated_at", page=2, limit=2).mock(http, ok(page([person(3), person(2)], True)))
        output = run_read(config(page_size=2), ["people"])

    ids = [r["id"] for r in record_data(output)]
    assert sorted(ids) == sorted(resource_id("people", n) for n in (1, 2, 3, 8, 9)) and len(ids) == 5
    assert (first.call_count, second.call_count) == (1, 1), "more pages only while a page ends without updated_at"
    assert http.call_count == 4


def test_full_refresh_with_records_without_updated_at_sorted_first_costs_no_extra_request():
    """MySQL: nulls first ascending; the walk's own first page shows them."""
    with requests_mock.Mocker() as http:
        _first_page("people", limit=2).mock(http, ok(page([_undated(8), _undated(9)], True)))
        NorthpassRequest("people").with_limit(2).with_page(2).with_sort("updated_at").mock(http, ok(page([person(1), person(2)], True)))
        after = person(2)["attributes"]["updated_at"]
        _first_page("people", limit=2).with_filter("updated_at", "gteq", after).mock(http, ok(page([person(2)])))
        output = run_read(config(page_size=2), ["people"])

    ids = [r["id"] for r in record_data(output)]
    assert sorted(ids) == sorted(resource_id("people", n) for n in (1, 2, 8, 9)) and len(ids) == 4
    assert http.call_count == 3


def test_an_incremental_sync_emits_records_without_updated_at_sorted_first_and_they_never_move_the_state():
    saved = person(5)["attributes"]["updated_at"]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at").mock(http, ok(page([person(6), person(5), person(4)], True)))
        NorthpassRequest.people_unfiltered("updated_at").mock(http, ok(page([_undated(8), person(1)], True)))
        output = run_read(config(), ["people"], state={"people": {"updated_at": saved}}, sync_mode=SyncMode.incremental)

    ids = [r["id"] for r in record_data(output)]
    assert sorted(ids) == sorted(resource_id("people", n) for n in (5, 6, 8))
    assert output.state_messages[-1].state.stream.stream_state.updated_at == person(6)["attributes"]["updated_at"]
    assert http.call_count == 2


def test_an_incremental_sync_finds_records_without_updated_at_sorted_last_in_its_first_request():
    saved = person(5)["attributes"]["updated_at"]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at").mock(http, ok(page([_undated(8), person(6), person(5), person(4)], True)))
        output = run_read(config(), ["people"], state={"people": {"updated_at": saved}}, sync_mode=SyncMode.incremental)

    assert sorted(r["id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in (5, 6, 8))
    assert http.call_count == 1, "the nulls sort at the descending end: no need to look at the other"


def test_a_list_whose_records_have_no_updated_at_is_read_whole_with_one_warning():
    """The server ignores a filter and a sort on an attribute no record has: its default order."""
    undated = [{"id": f"c{n}", "type": "categories", "attributes": {"name": f"C{n}"}} for n in range(3)]
    saved = "2024-05-01T00:00:00Z"
    newest_first = NorthpassRequest("categories").with_limit(2).with_sort("-updated_at")
    with requests_mock.Mocker() as http:
        pages = [newest_first.with_page(1).mock(http, ok(page(undated[:2], True))),
                 newest_first.with_page(2).mock(http, ok(page(undated[2:])))]
        output = run_read(config(page_size=2), ["categories"], state={"categories": {"updated_at": saved}},
                          sync_mode=SyncMode.incremental)

    assert [r["id"] for r in record_data(output)] == ["c0", "c1", "c2"]
    assert [p.call_count for p in pages] == [1, 1] and http.call_count == 2, "read whole once, nothing more"
    assert len(_warnings(output, "categories", "none of its records carries updated_at")) == 1
    assert output.state_messages[-1].state.stream.stream_state.updated_at == saved


def test_a_full_refresh_of_a_list_without_updated_at_reads_it_whole_once():
    undated = [{"id": f"c{n}", "type": "categories", "attributes": {"name": f"C{n}"}} for n in range(3)]
    with requests_mock.Mocker() as http:
        walk = _first_page("categories").mock(http, ok(page(undated)))
        output = run_read(config(), ["categories"])

    assert [r["id"] for r in record_data(output)] == ["c0", "c1", "c2"]
    assert walk.call_count == 1 and http.call_count == 1
    assert len(_warnings(output, "categories", "none of its records carries updated_at")) == 1


# ----------------------------------------------------------------------------- orders the server does not keep


def test_a_server_ignoring_the_descending_sort_is_read_whole_not_trusted():
    """Pages that cannot be one end of the order (a dated record before an undated one, after undated
    ones lead) mean the sort is ignored: the list is read whole, nothing taken on trust."""
    saved = person(5)["attributes"]["updated_at"]
    newest_first = NorthpassRequest.people_unfiltered("-updated_at", limit=2)
    with requests_mock.Mocker() as http:
        newest_first.mock(http, ok(page([_undated(8), _undated(9)], True)))
        NorthpassRequest.people_unfiltered("-updated_at", page=2, limit=2).mock(http, ok(page([person(6), _undated(7)])))
        NorthpassRequest.people().with_limit(2).with_page(1).mock(http, ok(page([_undated(8), _undated(9)], True)))
        NorthpassRequest.people().with_limit(2).with_page(2).mock(http, ok(page([person(6), _undated(7)])))
        output = run_read(config(page_size=2), ["people"], state={"people": {"updated_at": saved}}, sync_mode=SyncMode.incremental)

    assert sorted(r["id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in (6, 7, 8, 9))
    assert len(_warnings(output, "ignored sort=-updated_at", "reading the whole list")) == 1


def test_a_newest_page_that_does_not_reach_the_state_is_not_taken_for_the_changes():
    saved = person(5)["attributes"]["updated_at"]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at", limit=2).mock(http, ok(page([_undated(8), person(1)], True)))
        walk = _first_page("people", limit=2).with_filter("updated_at", "gteq", saved).mock(http, ok(page([person(6), person(7)])))
        output = run_read(config(page_size=2), ["people"], state={"people": {"updated_at": saved}}, sync_mode=SyncMode.incremental)

    assert sorted(r["id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in (6, 7, 8))
    assert walk.call_count == 1


def test_a_full_refresh_whose_descending_page_is_older_than_the_walk_reads_the_list_whole():
    """The newest page cannot begin below what the walk has seen: the server ignores the minus."""
    with requests_mock.Mocker() as http:
        _first_page("people", limit=2).mock(http, ok(page([person(1), person(2)], True)))
        after = person(2)["attributes"]["updated_at"]
        _first_page("people", limit=2).with_filter("updated_at", "gteq", after).mock(http, ok(page([person(2), person(3)])))
        NorthpassRequest.people_unfiltered("-updated_at", limit=2).mock(http, ok(page([person(1), person(2)], True)))
        scan = [NorthpassRequest.people().with_limit(2).with_page(n) for n in (1, 2, 3)]
        for request, (records, more) in zip(scan, [([1, 2], True), ([3, 8], True), ([9], False)]):
            request.mock(http, ok(page([person(n) if n < 8 else _undated(n) for n in records], more)))
        output = run_read(config(page_size=2), ["people"])

    ids = {r["id"] for r in record_data(output)}
    assert ids == {resource_id("people", n) for n in (1, 2, 3, 8, 9)}


def test_no_state_is_given_before_the_next_page_proves_the_filter_honoured():
    """Page 1 of a server ignoring filter and sort may look ordered; its checkpoint waits for page 2."""
    default_order = [person(1), person(5), person(3)]
    with requests_mock.Mocker() as http:
        _first_page("people", limit=2).mock(http, ok(page(default_order[:2], True)))
        later = person(5)["attributes"]["updated_at"]
        _first_page("people", limit=2).with_filter("updated_at", "gteq", later).mock(http, ok(page(default_order[:2], True)))
        NorthpassRequest.people().with_limit(2).with_page(1).mock(http, ok(page(default_order[:2], True)))
        NorthpassRequest.people().with_limit(2).with_page(2).mock(http, ok(page(default_order[2:])))
        output = run_read(config(page_size=2), ["people"], sync_mode=SyncMode.incremental)

    emitted = set()
    for message in output.records_and_state_messages:
        if message.record:
            emitted.add(message.record.data["updated_at"])
        else:
            state = message.state.stream.stream_state.updated_at
            assert {p["attributes"]["updated_at"] for p in default_order if p["attributes"]["updated_at"] < state} <= emitted
    assert len(emitted) == 3


def test_a_newest_page_holding_the_whole_list_is_the_whole_read():
    saved = person(5)["attributes"]["updated_at"]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at").mock(http, ok(page([person(7), person(6), person(1), _undated(9)])))
        output = run_read(config(), ["people"], state={"people": {"updated_at": saved}}, sync_mode=SyncMode.incremental)

    assert sorted(r["id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in (6, 7, 9))
    assert http.call_count == 1
