"""Quizzes, the activity feed, transcripts and the bulk course properties against the fake server,
under both runners: every record once (events twice where the feed holds twins), events arriving
mid-sync, a second sync after new events, a completion found by the next incremental sync, a feed
ignoring its query, the bulk list refused, an endpoint that does not exist."""

import time
from collections import Counter

import pytest

from integration_tests.connector import catalog_for, run_connector
from integration_tests.fake_northpass import FakeNorthpass, School, iso

API_KEY = "analyst-key-3d71e0"
STREAMS = ["quizzes", "activity_events", "transcripts", "course_properties"]


@pytest.fixture
def school():
    return School.generate(people=60, courses=6, enrollments=120, groups=2, learning_paths=2, categories=2,
                           activities_per_course=2, quizzes=7, events=400, event_burst=150, seed=11)


@pytest.fixture
def server(school):
    with FakeNorthpass(school, api_key=API_KEY, max_limit=100, rate_limit=None) as running:
        yield running


def _config(server, **extra):
    return {"api_key": API_KEY, "base_url": server.url, "page_size": 50, "requests_per_second": 100, **extra}


def _event_key(event):
    relationships = event["relationships"]
    activity = relationships["activity"]["data"]
    return relationships["person"]["data"]["id"], activity and activity["id"], event["type"], event["attributes"]["created_at"]


def _feed(school):
    with school.lock:
        return Counter(_event_key(e) for e in school.events)


def _events(run):
    return Counter((r["person_id"], r["activity_id"], r["type"], r["created_at"]) for r in run.records("activity_events"))


def _now():
    return iso(int(time.time()))


def _state(run, stream):
    (last,) = [s for s in run.states() if s["stream"]["stream_descriptor"]["name"] == stream][-1:]
    return [{"type": "STREAM", "stream": last["stream"]}]


def test_every_quiz_event_transcript_item_and_properties_row_once(server, school, runner):
    run = run_connector("read", _config(server), catalog_for(STREAMS), runner=runner)

    assert run.returncode == 0, run.output()[-3000:]
    assert sorted(r["id"] for r in run.records("quizzes")) == sorted(school.quizzes) and len(school.quizzes) == 7
    feed = _feed(school)
    assert max(feed.values()) >= 2, "the feed holds twins"
    assert _events(run) == feed, "every event once, twins twice"
    assert all("id" not in r for r in run.records("activity_events"))
    transcripts = sorted((p, i["attributes"]["resource_type"], i["attributes"]["resource_id"], i["attributes"]["attempt_number"])
                         for p, items in school.transcripts.items() for i in items)
    assert sorted((r["person_id"], r["resource_type"], r["resource_id"], r["attempt_number"]) for r in run.records("transcripts")) == transcripts
    assert len(transcripts) > len(set(t[:3] for t in transcripts)), "a learner with two attempts"
    rows = sorted((r["course_id"], r["id"]) for r in run.records("course_properties"))
    readable = {c for c, p in school.course_properties.items() if p is not None}
    assert {c for c, _ in rows} == readable | {r["attributes"]["course_id"] for r in school.archived_course_properties}
    assert len(rows) == len(set(rows)) == len(readable) + len(school.archived_course_properties)
    assert server.count("/v2/properties/courses/*") == 0, "no request per course"


def test_events_arriving_during_a_sync_neither_hide_nor_duplicate_others_and_the_next_sync_brings_them(server, school, runner):
    before = _feed(school)
    arrived = []

    def more_events_on_each_page(server, entry):
        if entry.path == "/v2/events" and len(arrived) < 40:
            arrived.extend(school.add_events(4, at=_now()))  # at the newest end, as the feed grows

    server.on_request = more_events_on_each_page
    catalog = catalog_for(["activity_events"], sync_mode="incremental")
    first = run_connector("read", _config(server), catalog, runner=runner)

    assert first.returncode == 0, first.output()[-3000:]
    assert arrived, "events arrived during the sync"
    got = _events(first)
    assert not got - _feed(school), "no event twice (twins no more than twice)"
    assert not before - got, "every event there at the start"

    server.on_request = None
    added = Counter(_event_key(e) for e in school.add_events(30, at=iso(int(time.time()) + 2)))  # after the state's second
    server.reset_log()
    second = run_connector("read", _config(server), catalog, state=_state(first, "activity_events"), runner=runner)

    assert second.returncode == 0, second.output()[-3000:]
    assert server.count("/v2/events") <= 4
    assert not (added - _events(second)), "every new event"
    assert not _feed(school) - (got + _events(second)), "the two syncs hold every event"
    boundary = _state(first, "activity_events")[0]["stream"]["stream_state"]["created_at"]
    repeated = (got & _events(second))
    assert all(key[3] == boundary for key in repeated), "only the state's second is read again"


def test_a_completion_without_a_change_to_the_person_is_picked_up_by_the_next_incremental_sync(server, school, runner):
    catalog = catalog_for(["transcripts"], sync_mode="incremental")
    first = run_connector("read", _config(server), catalog, runner=runner)
    assert first.returncode == 0, first.output()[-3000:]
    assert server.count("/v2/transcripts/*") == len(school.people)

    # As if the first sync had ended at the school's clock (its change log ends a minute before the sync
    # began, so a completion must be older than the next sync by a minute, as between real syncs).
    state = _state(first, "transcripts")
    state[0]["stream"]["stream_state"]["parent_state"]["activity_events"] = {"created_at": iso(school.clock)}
    with school.lock:
        updated = {p: dict(school.people[p]["attributes"]) for p in school.people}
    item = school.complete()  # at the school's next second
    learner = item["links"]["self"].split("/")[3]
    assert {p: school.people[p]["attributes"] for p in school.people} == updated, "no person changed"
    server.reset_log()
    second = run_connector("read", _config(server), catalog, state=state, runner=runner)

    assert second.returncode == 0, second.output()[-3000:]
    (completed,) = [r for r in second.records("transcripts") if r["id"] == item["id"]]
    assert completed["progress_status"] == "completed" and completed["completed_at"] == item["attributes"]["completed_at"]
    people_cursor = state[0]["stream"]["stream_state"]["parent_state"]["people"]["updated_at"]
    boundary = {p for p, person in school.people.items() if person["attributes"]["updated_at"] == people_cursor}
    asked = {r.path.split("/")[3] for r in server.requests if r.path.startswith("/v2/transcripts/")}
    assert asked == {learner} | boundary, "the learner, and who the people cursor's second holds (read again)"


def test_a_learner_whose_transcript_cannot_be_read_is_not_passed_by_the_state(server, school, runner):
    catalog = catalog_for(["transcripts"], sync_mode="incremental")
    first = run_connector("read", _config(server), catalog, runner=runner)
    assert first.returncode == 0, first.output()[-3000:]

    changed = [school.update_person() for _ in range(4)]
    server.inject(f"^/v2/transcripts/{changed[1]}$", "500", times=1000)
    failed = run_connector("read", _config(server, max_retries=1), catalog, state=_state(first, "transcripts"), runner=runner)

    assert failed.returncode != 0 and failed.errors()
    saved = [s for s in failed.states() if s["stream"]["stream_descriptor"]["name"] == "transcripts"]
    state = _state(failed, "transcripts") if saved else _state(first, "transcripts")
    people_cursor = state[0]["stream"]["stream_state"]["parent_state"]["people"]["updated_at"]
    assert people_cursor < school.people[changed[1]]["attributes"]["updated_at"], "not past the learner unread"

    server.clear_faults()
    server.reset_log()
    third = run_connector("read", _config(server), catalog, state=state, runner=runner)
    assert third.returncode == 0, third.output()[-3000:]
    assert server.count(f"/v2/transcripts/{changed[1]}") == 1


def test_a_feed_ignoring_filter_and_sort_is_read_newest_first_down_to_the_state_with_one_warning(server, school, runner):
    server.ignore_filters = server.ignore_sort = True
    catalog = catalog_for(["activity_events"], sync_mode="incremental")
    first = run_connector("read", _config(server), catalog, runner=runner)
    assert first.returncode == 0, first.output()[-3000:]
    assert _events(first) == _feed(school)

    added = Counter(_event_key(e) for e in school.add_events(60))  # a second each, after the state
    server.reset_log()
    second = run_connector("read", _config(server), catalog, state=_state(first, "activity_events"), runner=runner)

    assert second.returncode == 0, second.output()[-3000:]
    assert not added - _events(second)
    assert server.count("/v2/events") <= 2 + 3, "two probes, then pages down to the state (60 events at 50 a page)"
    assert len([w for w in second.logs("WARN") if "activity_events" in w and "newest first" in w]) == 1


def test_course_properties_from_each_course_where_the_bulk_list_is_refused(server, school, runner):
    server.properties_list = False
    run = run_connector("read", _config(server), catalog_for(["course_properties"]), runner=runner)

    assert run.returncode == 0, run.output()[-3000:]
    readable = sorted(c for c, p in school.course_properties.items() if p is not None)
    assert sorted(r["course_id"] for r in run.records()) == readable
    assert len([w for w in run.logs("WARN") if "/v2/properties/courses " in w and "each" in w]) == 1
    for course_id in set(school.courses) - set(readable):
        assert len([w for w in run.logs("WARN") if course_id in w and "403" in w]) == 1


def test_person_course_progresses_stop_when_the_endpoint_does_not_exist(server, school, runner):
    server.course_progresses_at = False
    run = run_connector("read", _config(server, num_workers=2), catalog_for(["person_course_progresses"]), runner=runner)

    assert run.returncode == 0, run.output()[-3000:]
    assert not run.records()
    assert server.count("/v2/people/*") - server.count("/v2/people") <= 5, f"not {len(school.people)} requests"
    assert len([w for w in run.logs("WARN") if "does not exist" in w]) == 1
