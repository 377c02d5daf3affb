"""Exact requests of quizzes, the activity feed, transcripts and course properties from their bulk list."""

import re
from datetime import datetime, timedelta, timezone

import requests_mock

from airbyte_cdk.models import FailureType, SyncMode

from source_northpass import components
from unit_tests.harness import log_lines, record_data, run_read
from unit_tests.northpass_builders import NorthpassRequest, config, course, error, ok, page, person, resource_id, status


def _warnings(output, *words):
    return [w for w in log_lines(output, "WARN") if all(word in w for word in words)]


def _event(second: int, person_n: int = 1, activity: str = "a1", kind: str = "learner_viewed_activity_events"):
    """An event of the feed: no id, no links; `second` after 2024-01-01T00:00:00Z."""
    moment = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=second)
    return {
        "type": kind,
        "attributes": {"created_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "relationships": {"person": {"data": {"type": "people", "id": resource_id("people", person_n)}},
                          "activity": {"data": {"type": "activities", "id": activity}}},
    }


def _events(sort=None, page_number=1, filters=None, limit=100):
    request = NorthpassRequest("events").with_limit(limit).with_page(page_number)
    request = request.with_sort(sort) if sort else request
    for (attribute, predicate), value in (filters or {}).items():
        request.with_filter(attribute, predicate, value)
    return request


def _keys(output):
    return [(r["person_id"], r["activity_id"], r["type"], r["created_at"]) for r in record_data(output)]


# ----------------------------------------------------------------------------- quizzes


def test_quizzes_are_read_whole_by_page_number_until_links_next_is_absent():
    quiz = {"id": "q1", "type": "quizzes", "attributes": {"name": "Final", "quiz_type": "graded", "legacy_id": 7, "created_at": "2024-01-01T00:00:00Z"}}
    with requests_mock.Mocker() as http:
        NorthpassRequest("quizzes").with_limit(100).with_page(1).mock(http, ok(page([quiz], has_next=True)))
        NorthpassRequest("quizzes").with_limit(100).with_page(2).mock(http, ok(page([{**quiz, "id": "q2"}])))
        output = run_read(config(), ["quizzes"])

    assert [(r["id"], r["name"], r["quiz_type"], r["legacy_id"]) for r in record_data(output)] == [
        ("q1", "Final", "graded", 7), ("q2", "Final", "graded", 7)]
    assert http.call_count == 2


def test_quizzes_refused_are_skipped_with_one_warning_or_fail_as_a_config_error_when_skipping_is_off():
    for skip in (True, False):
        with requests_mock.Mocker() as http:
            NorthpassRequest("quizzes").with_limit(100).with_page(1).mock(http, status(403, error(403, "Not in your plan")))
            output = run_read(config(skip_unavailable_streams=skip), ["quizzes"], expect_failure=not skip)
        if skip:
            assert not output.errors and not output.records
            assert len(_warnings(output, "Stream quizzes skipped", "/v2/quizzes", "HTTP 403", "Not in your plan")) == 1
        else:
            (failure,) = [e.trace.error for e in output.errors if e.trace.error.stream_descriptor]
            assert failure.failure_type == FailureType.config_error and "/v2/quizzes" in failure.message


# ----------------------------------------------------------------------------- the activity feed


def test_the_feed_is_read_by_key_on_created_at_with_both_ids_flat_and_no_id():
    first = [_event(s, person_n=s) for s in range(100)]
    with requests_mock.Mocker() as http:
        _events("created_at").mock(http, ok(page(first, has_next=True)))
        _events("created_at", filters={("created_at", "gteq"): first[-1]["attributes"]["created_at"]}).mock(
            http, ok(page([first[-1], _event(100, person_n=100)])))
        _events("-created_at").mock(http, ok(page([_event(100, person_n=100)], has_next=True)))  # none without created_at
        output = run_read(config(), ["activity_events"])

    records = record_data(output)
    assert len(records) == 101 and len(set(_keys(output))) == 101, "the boundary event once"
    assert records[0]["person_id"] == resource_id("people", 0) and records[0]["activity_id"] == "a1"
    assert "id" not in records[0] and records[0]["type"] == "learner_viewed_activity_events"
    assert http.call_count == 3


def test_more_than_a_page_of_events_in_one_second_is_read_by_page_within_it_keeping_twins():
    """150 events at one second, two of them exact twins (a learner viewing one activity twice):
    every event once, both twins, read by page number within the second until a pass finds nothing new."""
    burst = [_event(5, person_n=n) for n in range(149)] + [_event(5, person_n=0)]  # person 0 twice
    second = burst[0]["attributes"]["created_at"]
    with requests_mock.Mocker() as http:
        _events("created_at").mock(http, ok(page(burst[:100], has_next=True)))
        _events("created_at", filters={("created_at", "gteq"): second}).mock(http, ok(page(burst[:100], has_next=True)))
        tie = {("created_at", "eq"): second}
        _events("created_at", 1, filters=tie).mock(http, ok(page(burst[:100], has_next=True)))
        _events("created_at", 2, filters=tie).mock(http, ok(page(burst[100:])))
        _events("created_at", filters={("created_at", "gt"): second}).mock(http, ok(page([_event(6, person_n=7)])))
        _events("-created_at").mock(http, ok(page([_event(6, person_n=7)], has_next=True)))
        output = run_read(config(), ["activity_events"])

    keys = _keys(output)
    assert len(keys) == 151
    assert keys.count((resource_id("people", 0), "a1", "learner_viewed_activity_events", second)) == 2, "twins are two events"
    assert http.call_count == 2 + 2 * 2 + 1 + 1, "two passes of two pages within the second"


def test_an_incremental_sync_after_a_few_new_events_costs_two_requests():
    state = {"created_at": "2024-01-01T00:00:10Z"}
    newest = [_event(s, person_n=s) for s in (14, 13, 12, 11, 10, 9)]
    with requests_mock.Mocker() as http:
        _events("-created_at").mock(http, ok(page(newest, has_next=True)))
        _events("created_at").mock(http, ok(page([_event(0)], has_next=True)))  # none without created_at
        output = run_read(config(), ["activity_events"], state={"activity_events": state}, sync_mode=SyncMode.incremental)

    assert sorted(r["created_at"] for r in record_data(output)) == [
        f"2024-01-01T00:00:{s}Z" for s in (10, 11, 12, 13, 14)], "from the state's second on"
    assert http.call_count == 2
    assert output.state_messages[-1].state.stream.stream_state.created_at == "2024-01-01T00:00:14Z"


def test_a_feed_ignoring_filter_and_sort_is_read_newest_first_down_to_the_state_with_one_warning():
    """The server answers every query with its own order, newest first: the first unfiltered page looks
    right, the ascending one does not. Read page by page until a page older than the state."""
    state = {"created_at": "2024-01-01T00:05:00Z"}
    feed = [_event(600 - s, person_n=s) for s in range(300)] + [_event(1)]  # 00:10:00 down to 00:05:01, then older

    def by_page_number_only(request, context):
        number = int(request.qs["page"][0])
        return page(feed[(number - 1) * 100:number * 100], has_next=True)

    with requests_mock.Mocker() as http:
        http.get(re.compile(r"/v2/events"), json=by_page_number_only)
        output = run_read(config(), ["activity_events"], state={"activity_events": state}, sync_mode=SyncMode.incremental)

    assert len(record_data(output)) == 300 and len(set(_keys(output))) == 300, "each new event once"
    (warning,) = _warnings(output, "activity_events", "newest first")
    assert "ignored sort=created_at" in warning
    asked = [sorted((k, v[0]) for k, v in r.qs.items()) for r in http.request_history]
    assert asked == [
        [("limit", "100"), ("page", "1"), ("sort", "-created_at")],
        [("filter[created_at][gteq]", "2024-01-01t00:05:00z"), ("limit", "100"), ("page", "1"), ("sort", "created_at")],
        *[[("limit", "100"), ("page", str(n))] for n in (1, 2, 3, 4)],
    ], "stops at the first page older than the state"


# ----------------------------------------------------------------------------- course properties


def test_course_properties_come_from_their_bulk_list_with_archived_versions_kept():
    rows = [{"id": f"row{n}", "type": "course_properties", "attributes": {"course_id": f"c{n % 2}", "version_number": n, "npcu": 1.5}}
            for n in range(3)]  # c0 twice: the live course and an archived version
    with requests_mock.Mocker() as http:
        NorthpassRequest("properties/courses").with_limit(100).with_page(1).mock(http, ok(page(rows[:2], has_next=True)))
        NorthpassRequest("properties/courses").with_limit(100).with_page(2).mock(http, ok(page(rows[2:])))
        output = run_read(config(), ["course_properties"])

    assert [(r["course_id"], r["id"], r["version_number"]) for r in record_data(output)] == [
        ("c0", "row0", 0), ("c1", "row1", 1), ("c0", "row2", 2)]
    assert http.call_count == 2, "no request per course"


def test_course_properties_fall_back_to_each_course_when_the_bulk_list_is_refused():
    properties = {"data": {"id": resource_id("courses", 1), "type": "course_properties", "attributes": {"credit_value": 2.5}}}
    with requests_mock.Mocker() as http:
        NorthpassRequest("properties/courses").with_limit(100).with_page(1).mock(http, status(404, error(404, "No route")))
        NorthpassRequest.courses().with_limit(100).with_page(1).with_sort("updated_at").mock(http, ok(page([course(1), course(2)])))
        first = NorthpassRequest(f"properties/courses/{resource_id('courses', 1)}").mock(http, ok(properties))
        NorthpassRequest(f"properties/courses/{resource_id('courses', 2)}").mock(http, status(403, error(403, "Forbidden")))
        output = run_read(config(), ["course_properties"])

    assert not output.errors
    assert [(r["course_id"], r["credit_value"]) for r in record_data(output)] == [(resource_id("courses", 1), 2.5)]
    assert first.call_count == 1 and http.call_count == 4
    assert len(_warnings(output, "course_properties", "/v2/properties/courses", "HTTP 404", "each")) == 1
    assert len(_warnings(output, resource_id("courses", 2), "HTTP 403")) == 1


# ----------------------------------------------------------------------------- transcripts, progresses


def _item(resource: str, attempt: int = 1, **attributes):
    return {"id": f"{resource}-{attempt}", "type": "transcript_items",
            "attributes": {"resource_id": resource, "resource_type": "course", "attempt_number": attempt,
                           "progress_status": "completed", "completed_at": "2024-02-01T00:00:00Z", **attributes}}


def test_transcripts_are_read_per_person_with_the_person_flat_and_both_attempts_kept():
    since = "2024-01-01T00:00:00Z"
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at").mock(http, ok(page([person(2), person(1)])))  # the whole list
        _events("-created_at").mock(http, ok(page([])))
        for n, items in ((1, [_item("c1", 1), _item("c1", 2)]), (2, [_item("c2")])):
            NorthpassRequest(f"transcripts/{resource_id('people', n)}").with_limit(100).with_page(1).mock(http, ok(page(items)))
        output = run_read(config(start_date=since), ["transcripts"])

    assert sorted((r["person_id"], r["resource_id"], r["attempt_number"]) for r in record_data(output)) == sorted([
        (resource_id("people", 1), "c1", 1), (resource_id("people", 1), "c1", 2), (resource_id("people", 2), "c2", 1)])
    assert http.call_count == 4


def test_an_incremental_sync_reads_the_transcripts_of_people_changed_or_active_since_each_once():
    people_since, events_since = "2024-01-01T00:00:05Z", "2024-01-01T00:00:20Z"
    state = {"state": {"last_active_at": "2024-01-01T00:00:00Z"}, "use_global_cursor": True,
             "parent_state": {"people": {"updated_at": people_since}, "activity_events": {"created_at": events_since}}}
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("-updated_at").mock(http, ok(page([person(6), person(5), person(4)], True)))
        NorthpassRequest.people_unfiltered("updated_at").mock(http, ok(page([person(0)], True)))
        # person 9 active three times, person 6 changed and active: each read once
        active = [_event(23, 9), _event(22, 6), _event(21, 9), _event(20, 9), _event(19, 3)]
        _events("-created_at").mock(http, ok(page(active, has_next=True)))
        _events("created_at").mock(http, ok(page([_event(0)], has_next=True)))
        read = {n: NorthpassRequest(f"transcripts/{resource_id('people', n)}").with_limit(100).with_page(1).mock(http, ok(page([_item(f"c{n}")])))
                for n in (5, 6, 9)}
        output = run_read(config(), ["transcripts"], state={"transcripts": state}, sync_mode=SyncMode.incremental)

    assert not output.errors
    assert sorted(r["person_id"] for r in record_data(output)) == sorted(resource_id("people", n) for n in (5, 6, 9))
    assert [read[n].call_count for n in (5, 6, 9)] == [1, 1, 1]
    parents = output.state_messages[-1].state.stream.stream_state.parent_state
    assert parents["people"]["updated_at"] == person(6)["attributes"]["updated_at"]
    assert parents["activity_events"]["created_at"] == "2024-01-01T00:00:23Z"


def test_person_course_progresses_stop_asking_once_the_first_people_show_the_endpoint_absent():
    people = [person(n) for n in range(8)]
    with requests_mock.Mocker() as http:
        NorthpassRequest.people_unfiltered("updated_at").mock(http, ok(page(people)))
        asked = http.get(re.compile(r"/v2/people/[^/]+/course_progresses"), **status(404, error(404, "No route matches")))
        output = run_read(config(num_workers=2), ["person_course_progresses"])

    assert not output.errors and not output.records
    assert asked.call_count <= 4, "the first few people, not all 8"
    assert len(_warnings(output, "person_course_progresses", "does not exist")) == 1


def test_a_first_sync_starts_the_change_log_a_minute_before_itself_and_leaves_newer_events_to_the_next():
    """No state, no start_date: every person's transcript is read (people), and the feed as change log
    only from a minute before the sync. An event after that may be newer than its learner's read in this
    sync: the log's state stays where it began, so the next sync reads the learner again."""
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for feed in ([], [{**_event(0, 1), "attributes": {"created_at": later}}]):
        components.SYNC = components._ThisSync()  # a sync each
        with requests_mock.Mocker() as http:
            NorthpassRequest.people_unfiltered("updated_at").mock(http, ok(page([person(1), person(2)])))
            events = NorthpassRequest("events").with_limit(100).with_page(1).with_sort("-created_at").mock(http, ok(page(feed)))
            read = {n: NorthpassRequest(f"transcripts/{resource_id('people', n)}").with_limit(100).with_page(1).mock(http, ok(page([_item(f"c{n}")])))
                    for n in (1, 2)}
            before = datetime.now(timezone.utc)
            output = run_read(config(), ["transcripts"], sync_mode=SyncMode.incremental)

        assert not output.errors and events.call_count == 1
        assert [read[n].call_count for n in (1, 2)] == [1, 1]
        logged = output.state_messages[-1].state.stream.stream_state.parent_state["activity_events"]["created_at"]
        began = datetime.strptime(logged, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert before - timedelta(minutes=2) <= began <= before - timedelta(seconds=59), "a minute before the sync"


def test_twins_split_by_a_page_boundary_are_both_emitted_and_the_boundary_event_once():
    """Page 1 ends with one of two identical events; the next request (from that second) repeats it
    and holds its twin: the repeat is dropped, the twin is not."""
    twin, other = _event(7, person_n=1), _event(7, person_n=2)
    first = [_event(s, person_n=s) for s in range(7)] + [other, twin]
    with requests_mock.Mocker() as http:
        _events("created_at", limit=9).mock(http, ok(page(first, has_next=True)))
        _events("created_at", filters={("created_at", "gteq"): twin["attributes"]["created_at"]}, limit=9).mock(
            http, ok(page([other, twin, twin, _event(8, person_n=3)])))
        _events("-created_at", limit=9).mock(http, ok(page([_event(8, person_n=3)], has_next=True)))
        output = run_read(config(page_size=9), ["activity_events"])

    keys = _keys(output)
    assert keys.count((resource_id("people", 1), "a1", "learner_viewed_activity_events", twin["attributes"]["created_at"])) == 2
    assert keys.count((resource_id("people", 2), "a1", "learner_viewed_activity_events", other["attributes"]["created_at"])) == 1
    assert len(keys) == 11
