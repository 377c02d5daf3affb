"""Tests of the fake Northpass server itself: it must behave as documented before it can test the connector."""
import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from integration_tests.fake_northpass import FakeNorthpass, School

KEY = "test-key"
ROOT = Path(__file__).resolve().parent.parent
SIZES = dict(people=300, courses=12, enrollments=400, groups=6, learning_paths=3, categories=4,
             activities_per_course=3)
FEED = dict(events=500, event_burst=150)


@pytest.fixture
def school():
    return School.generate(**SIZES, **FEED, seed=7)


@pytest.fixture
def server(school):
    with FakeNorthpass(school, api_key=KEY, max_limit=100, default_limit=10, rate_limit=None) as srv:
        yield srv


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False  # never through a proxy: the server is on 127.0.0.1
        session.headers["X-Api-Key"] = KEY
        yield session


def get(http, server, path, **params):
    return http.get(server.url + path, params=params, timeout=10)


def fetch_all(http, server, path, **params):
    """Every record of a list, following links.next."""
    records, url = [], server.url + path
    response = http.get(url, params=params, timeout=10)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        records += body["data"]
        if "next" not in body["links"]:
            return records
        response = http.get(body["links"]["next"], timeout=10)


def ids(records):
    return [r["id"] for r in records]


def expected_order(records, *keys):
    """Python's version of the documented sort: keys (attr, descending), then id ascending."""
    ordered = sorted(records, key=lambda r: r["id"])
    for attr, descending in reversed(keys):
        ordered.sort(key=lambda r: (0, "") if (v := r["attributes"].get(attr)) is None else (1, v),
                     reverse=descending)
    return ids(ordered)


# ---------------------------------------------------------------- where Northpass may differ from our guesses
@pytest.mark.parametrize("served, answered", [("learning-paths", ["learning-paths"]), ("learning_paths", ["learning_paths"]),
                                              ("both", ["learning-paths", "learning_paths"])])
def test_learning_paths_answer_at_the_spelling_served_only(server, http, school, served, answered):
    server.learning_paths_at = served
    lp = next(iter(school.learning_paths))
    for spelling in ("learning-paths", "learning_paths"):
        for path_ in (f"/v2/{spelling}", f"/v2/{spelling}/{lp}/enrollments"):
            assert get(http, server, path_).status_code == (200 if spelling in answered else 404), path_


def test_a_groups_memberships_are_membership_rows_naming_each_person(server, http, school):
    group = next(g for g in school.groups if any(
        any(r["id"] == g for r in p["relationships"]["groups"]["data"]) for p in school.people.values()))
    people = get(http, server, f"/v2/groups/{group}/people", limit=100).json()["data"]
    rows = get(http, server, f"/v2/groups/{group}/memberships", limit=100).json()["data"]
    assert {r["type"] for r in rows} == {"memberships"} and {r["id"] for r in rows}.isdisjoint(p["id"] for p in people)
    assert sorted(r["relationships"]["person"]["data"]["id"] for r in rows) == sorted(p["id"] for p in people)
    server.group_people_at = "memberships"
    assert get(http, server, f"/v2/groups/{group}/people").status_code == 404
    assert get(http, server, f"/v2/groups/{group}/memberships").status_code == 200


def test_course_progresses_may_not_exist(server, http, school):
    person = next(p for p, progresses in school.course_progresses.items() if progresses)
    assert get(http, server, f"/v2/people/{person}/course_progresses").status_code == 200
    server.course_progresses_at = False
    for path_ in (f"/v2/people/{person}/course_progresses", "/v2/people/nope/course_progresses"):
        response = get(http, server, path_)
        assert response.status_code == 404 and response.json()["errors"][0]["detail"] == f"No route matches {path_}"
    assert get(http, server, f"/v2/people/{person}").status_code == 200


def test_all_courses_properties_may_not_exist_as_a_list(server, http, school):
    course = next(c for c, props in school.course_properties.items() if props is not None)
    assert get(http, server, "/v2/properties/courses").status_code == 200
    server.properties_list = False
    response = get(http, server, "/v2/properties/courses")
    assert response.status_code == 404
    assert response.json()["errors"][0]["detail"] == "No route matches /v2/properties/courses"
    assert get(http, server, f"/v2/properties/courses/{course}").status_code == 200


@pytest.mark.parametrize("nulls_last", [False, True])
def test_records_without_updated_at_match_no_filter_and_sort_at_one_end(server, http, school, nulls_last):
    server.nulls_last = nulls_last
    undated = set(school.undate("people", 3)) | set(school.undate("people", 2, absent=True))
    assert len(undated) == 5

    def ids(**query):
        return [r["id"] for r in fetch_all(http, server, "/v2/people", limit=100, **query)]

    filtered = ids(**{"filter[updated_at][gteq]": "1970-01-01T00:00:00Z"})
    assert undated.isdisjoint(filtered) and len(filtered) == len(school.people) - 5
    ascending, descending = ids(sort="updated_at"), ids(sort="-updated_at")
    ends = (ascending[-5:], descending[:5]) if nulls_last else (ascending[:5], descending[-5:])
    assert all(set(end) == undated for end in ends)


# ---------------------------------------------------------------- auth, routes, documents
def test_missing_or_wrong_api_key_is_401_without_echoing_the_key(server, http):
    for headers in ({"X-Api-Key": None}, {"X-Api-Key": "wrong-key-123"}):
        response = http.get(server.url + "/v2/people", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["errors"][0]["status"] == "401"
        assert "wrong-key-123" not in response.text and KEY not in response.text
    assert KEY not in get(http, server, "/v2/people").text


def test_every_documented_endpoint_answers(server, http, school):
    course = next(c for c, props in school.course_properties.items() if props is not None)
    person = next(p for p, progresses in school.course_progresses.items() if progresses)
    group, path = next(iter(school.groups)), next(iter(school.learning_paths))
    for path_ in ["/v2/people", f"/v2/people/{person}", f"/v2/people/{person}/course_progresses",
                  "/v2/courses", f"/v2/courses/{course}", f"/v2/courses/{course}/enrollments",
                  f"/v2/courses/{course}/activities", "/v2/groups", f"/v2/groups/{group}",
                  f"/v2/groups/{group}/people", f"/v2/groups/{group}/memberships",
                  "/v2/learning-paths", f"/v2/learning-paths/{path}/enrollments", "/v2/categories",
                  f"/v2/properties/courses/{course}", "/v2/properties/courses", "/v2/quizzes",
                  f"/v2/quizzes/{next(iter(school.quizzes))}", "/v2/events", f"/v2/transcripts/{person}"]:
        response = get(http, server, path_)
        assert response.status_code == 200, path_
        assert response.headers["Content-Type"] == "application/json"
    record = get(http, server, f"/v2/people/{person}").json()["data"]
    assert record["links"]["self"] == f"{server.url}/v2/people/{person}"
    assert set(record) == {"id", "type", "attributes", "relationships", "links"}
    progress = get(http, server, f"/v2/people/{person}/course_progresses").json()["data"]
    assert len(progress) == len(school.course_progresses[person])
    assert {p["type"] for p in progress} == {"course_progresses"}


def test_unknown_paths_and_parents_are_404_and_writes_are_405(server, http):
    for path in ["/v2/nope", "/v1/people", "/v2/people/nope", "/v2/courses/nope/enrollments",
                 "/v2/groups/nope/people", "/v2/properties/courses/nope", "/v2/quizzes/nope", "/v2/events/nope",
                 "/v2/transcripts/nope", "/"]:
        response = get(http, server, path)
        assert response.status_code == 404, path
        assert response.json() == {"errors": [{"status": "404", "title": "Not Found",
                                               "detail": response.json()["errors"][0]["detail"]}]}
    response = http.post(server.url + "/v2/people", json={"email": "x@example.com"}, timeout=10)
    assert response.status_code == 405
    assert http.delete(server.url + "/v2/people", timeout=10).status_code == 405


def test_generated_data_is_consistent(server, http, school):
    courses = fetch_all(http, server, "/v2/courses", limit=100)
    assert len(courses) == 12
    counts = [c["attributes"]["enrollments_count"] for c in courses]
    assert sum(counts) == 400 and 0 in counts  # some courses have no enrollment at all
    for course in courses:
        enrollments = fetch_all(http, server, f"/v2/courses/{course['id']}/enrollments", limit=100)
        assert len(enrollments) == course["attributes"]["enrollments_count"]
        assert all(e["attributes"]["course_id"] == course["id"] for e in enrollments)
    people = fetch_all(http, server, "/v2/people", limit=100)
    for group in school.groups:
        members = {p["id"] for p in people if {"type": "groups", "id": group} in p["relationships"]["groups"]["data"]}
        assert set(ids(fetch_all(http, server, f"/v2/groups/{group}/people", limit=100))) == members
        rows = fetch_all(http, server, f"/v2/groups/{group}/memberships", limit=100)
        assert {r["relationships"]["person"]["data"]["id"] for r in rows} == members
    assert all(len(p["relationships"]["groups"]["data"]) <= 2 for p in people)
    stamps = [p["attributes"][k] for p in people for k in ("created_at", "updated_at")]
    assert min(stamps) >= "2019-01-01T00:00:00Z" and max(stamps) <= "2024-12-31T23:59:59Z"
    assert all(len(s) == 20 and s.endswith("Z") for s in stamps)
    server.learning_paths_at = "both"
    assert ids(fetch_all(http, server, "/v2/learning-paths")) == ids(fetch_all(http, server, "/v2/learning_paths"))


def test_course_properties_are_403_for_a_fifth_of_the_courses(server, http, school):
    statuses = {c: get(http, server, f"/v2/properties/courses/{c}").status_code for c in school.courses}
    assert sorted(statuses.values()) == [200] * 10 + [403] * 2
    allowed = next(c for c, s in statuses.items() if s == 200)
    body = get(http, server, f"/v2/properties/courses/{allowed}").json()
    assert body["data"]["id"] == allowed and body["data"]["type"] == "course_properties"
    assert isinstance(body["data"]["attributes"]["credit_value"], float)
    assert isinstance(body["data"]["attributes"]["properties"], dict)
    denied = next(c for c, s in statuses.items() if s == 403)
    assert get(http, server, f"/v2/properties/courses/{denied}").json()["errors"][0]["status"] == "403"


# ---------------------------------------------------------------- quizzes, events, transcripts, all courses' properties
def _at(event):
    return event["attributes"]["created_at"]


def test_quizzes_are_a_top_level_list(server, http, school):
    quizzes = fetch_all(http, server, "/v2/quizzes", limit=2)
    assert len(quizzes) == 5 and ids(quizzes) == expected_order(list(school.quizzes.values()), ("created_at", False))
    assert get(http, server, "/v2/quizzes", limit=2, page=3).json()["links"].keys() == {"self", "prev"}
    assert {type(q["attributes"]["legacy_id"]) for q in quizzes} == {int, type(None)}
    for quiz in quizzes:
        assert set(quiz["attributes"]) == {"name", "quiz_type", "legacy_id", "created_at"}
        assert quiz["attributes"]["quiz_type"] in ("graded", "survey", "knowledge_check")
        assert quiz["relationships"]["course"]["data"]["id"] in school.courses
        assert get(http, server, f"/v2/quizzes/{quiz['id']}").json()["data"] == quiz
    surveys = fetch_all(http, server, "/v2/quizzes", **{"filter[quiz_type][eq]": "survey"})
    assert ids(surveys) == [q["id"] for q in quizzes if q["attributes"]["quiz_type"] == "survey"] and len(surveys) == 1


def test_events_have_no_id_and_list_newest_first(server, http, school):
    from integration_tests.fake_northpass import apply_sort

    feed = fetch_all(http, server, "/v2/events", limit=100)
    assert len(feed) == 650 and all(set(e) == {"type", "attributes", "relationships"} for e in feed)
    assert [_at(e) for e in feed] == sorted((_at(e) for e in feed), reverse=True)
    assert feed == school.events[::-1]  # generated in the order they happened: the newest first is the reverse
    assert fetch_all(http, server, "/v2/events", limit=100, sort="created_at") == school.events
    assert fetch_all(http, server, "/v2/events", limit=100, sort="-created_at") == feed
    assert apply_sort(school.events, None, "-created_at") == feed  # the reference path agrees
    assert apply_sort(school.events, "created_at", "-created_at") == school.events
    activities_of: dict = {}  # person -> the activities of their courses
    for course, enrollments in school.enrollments.items():
        for e in enrollments:
            activities_of.setdefault(e["attributes"]["person_id"], set()).update(
                a["id"] for a in school.activities[course])
    for event in feed:
        person, activity = (event["relationships"][k]["data"]["id"] for k in ("person", "activity"))
        assert event["type"] in ("learner_viewed_activity_events", "learner_completed_activity_events",
                                 "learner_started_course_events", "learner_completed_course_events")
        assert person in school.people and activity in activities_of.get(person, activity)
    server.ignore_sort = True
    assert fetch_all(http, server, "/v2/events", limit=100, sort="created_at") == feed


def test_the_generated_feed_has_a_burst_second_and_two_duplicate_pairs(server, http, school):
    (burst, in_burst), (_, next_most) = Counter(_at(e) for e in school.events).most_common(2)
    assert in_burst == 150 and next_most == 2
    in_order = [e for e in school.events if _at(e) == burst]
    query = {"filter[created_at][eq]": burst}
    assert fetch_all(http, server, "/v2/events", limit=7, sort="created_at", **query) == in_order
    assert fetch_all(http, server, "/v2/events", limit=7, **query) == in_order[::-1]
    copies = Counter(json.dumps(e, sort_keys=True) for e in school.events if _at(e) != burst)  # the burst may too
    twice = [json.loads(e) for e, n in copies.items() if n > 1]
    assert len(copies) == 498 and [copies[json.dumps(e, sort_keys=True)] for e in twice] == [2, 2]
    assert {e["type"] for e in twice} == {"learner_viewed_activity_events"}
    few = School.generate(people=30, courses=3, enrollments=20, events=19, seed=7).events
    assert len(few) == 19 == len({json.dumps(e, sort_keys=True) for e in few})


@pytest.mark.parametrize("predicate, count", [("gteq", 620), ("gt", 470)])
def test_events_filter_on_created_at(server, http, school, predicate, count):
    burst = Counter(_at(e) for e in school.events).most_common(1)[0][0]
    expected = [e for e in school.events if _at(e) > burst or (predicate == "gteq" and _at(e) == burst)]
    query = {f"filter[created_at][{predicate}]": burst}
    assert len(expected) == count
    assert fetch_all(http, server, "/v2/events", limit=100, **query) == expected[::-1]
    assert fetch_all(http, server, "/v2/events", limit=100, sort="created_at", **query) == expected


def test_added_events_arrive_at_the_newest_end(server, http, school):
    version, first_page = school.version, get(http, server, "/v2/events").json()["data"]
    new = school.add_events(3)
    assert school.version > version and len(school.events) == 653
    assert [_at(e) for e in new] == ["2025-01-01T00:00:01Z", "2025-01-01T00:00:02Z", "2025-01-01T00:00:03Z"]
    assert get(http, server, "/v2/events").json()["data"] == new[::-1] + first_page[:7]
    assert fetch_all(http, server, "/v2/events", limit=100, sort="created_at")[-4:] == school.events[-4:]
    person = list(school.people)[9]
    same_second = school.add_events(2, at="2025-01-01T00:00:03Z", person_id=person)
    assert [e["relationships"]["person"]["data"]["id"] for e in same_second] == [person, person]
    assert get(http, server, "/v2/events", limit=3).json()["data"] == same_second[::-1] + new[-1:]
    assert _at(school.add_events(1, at=1735689609)[0]) == "2025-01-01T00:00:09Z"


def test_a_transcript_is_a_paged_list_of_a_learners_courses_and_paths(server, http, school):
    assert sum(map(len, school.transcripts.values())) == 400 + 21 + 1  # enrollments, path enrollments, a retake
    enrolled = {(e["attributes"]["person_id"], c): e["attributes"] for c, es in school.enrollments.items() for e in es}
    firsts = [(pid, i["attributes"]) for pid, items in school.transcripts.items() for i in items
              if i["attributes"]["resource_type"] == "course" and i["attributes"]["attempt_number"] == 1]
    assert len(firsts) == 400 and all(enrolled[(pid, a["resource_id"])]["progress"] == a["progress"]
                                      and enrolled[(pid, a["resource_id"])]["enrolled_at"] == a["enrolled_at"]
                                      for pid, a in firsts)
    retakes = {pid: items for pid, items in school.transcripts.items()
               if len({(i["attributes"]["resource_type"], i["attributes"]["resource_id"]) for i in items}) < len(items)}
    assert len(retakes) == 1
    pid, stored = next(iter(retakes.items()))
    served = fetch_all(http, server, f"/v2/transcripts/{pid}", limit=1)
    assert len(served) == len(stored) == 3 and ids(served) == expected_order(stored, ("enrolled_at", False))
    (course, _), = Counter(i["attributes"]["resource_id"] for i in served).most_common(1)
    retaken = [i["attributes"] for i in served if i["attributes"]["resource_id"] == course]
    assert [(a["resource_type"], a["attempt_number"]) for a in retaken] == [("course", 1), ("course", 2)]
    assert {a["name"] for a in retaken} == {school.courses[course]["attributes"]["name"]}
    statuses = {"enrolled": 0, "completed": 0, "in_progress": 0}
    for items in school.transcripts.values():
        for item in items:
            a = item["attributes"]
            assert list(a) == ["resource_id", "resource_type", "name", "progress_status", "progress", "enrolled_at",
                               "started_at", "completed_at", "last_active_at", "attempt_number", "version_number"]
            assert a["progress_status"] == ("enrolled" if a["progress"] == 0 else "completed" if a["progress"] == 100
                                            else "in_progress")
            assert ("certificate" in item["links"]) == (a["progress"] == 100) == (a["completed_at"] is not None)
            statuses[a["progress_status"]] += 1
    assert statuses == {"enrolled": 132, "completed": 135, "in_progress": 155}
    done = next(i for pid, items in school.transcripts.items() for i in items if i["attributes"]["progress"] == 100)
    owner = next(pid for pid, items in school.transcripts.items() if done in items)
    rendered = next(i for i in fetch_all(http, server, f"/v2/transcripts/{owner}") if i["id"] == done["id"])
    assert rendered["links"] == {"self": f"{server.url}/v2/transcripts/{owner}/{done['id']}",
                                 "certificate": f"https://cdn.example.com/certificates/{done['id']}.pdf"}


def test_transcripts_of_unknown_deleted_and_new_people(server, http, school):
    assert get(http, server, "/v2/transcripts/nope").status_code == 404
    new = school.create_person()
    body = get(http, server, f"/v2/transcripts/{new}").json()
    assert body["data"] == [] and "next" not in body["links"]
    gone = next(pid for pid, items in school.transcripts.items() if items)
    assert get(http, server, f"/v2/transcripts/{gone}").status_code == 200
    school.delete_person(gone)
    assert get(http, server, f"/v2/transcripts/{gone}").status_code == 404


def test_complete_changes_a_transcript_and_adds_an_event_but_not_the_person(server, http, school):
    pid, item = next((pid, i) for pid, items in school.transcripts.items() for i in items
                     if i["attributes"]["progress"] == 0 and i["attributes"]["resource_type"] == "course")
    course, person = item["attributes"]["resource_id"], copy.deepcopy(school.people[pid])
    assert school.complete(pid, course) is item
    stamp = "2025-01-01T00:00:01Z"
    assert {k: item["attributes"][k] for k in ("progress", "progress_status", "started_at", "completed_at",
                                               "last_active_at")} == {
        "progress": 100, "progress_status": "completed", "started_at": stamp, "completed_at": stamp,
        "last_active_at": stamp}
    assert school.people[pid] == person
    served = next(i for i in fetch_all(http, server, f"/v2/transcripts/{pid}") if i["id"] == item["id"])
    assert served["attributes"] == item["attributes"]
    assert served["links"]["certificate"] == f"https://cdn.example.com/certificates/{item['id']}.pdf"
    newest = get(http, server, "/v2/events", limit=1).json()["data"][0]
    activity = newest["relationships"]["activity"]["data"]["id"]
    assert newest == {"type": "learner_completed_course_events", "attributes": {"created_at": stamp},
                      "relationships": {"person": {"data": {"type": "people", "id": pid}},
                                        "activity": {"data": {"type": "activities", "id": activity}}}}
    assert activity in {a["id"] for a in school.activities[course]} and len(school.events) == 651
    assert get(http, server, "/v2/people", **{"filter[updated_at][gteq]": "2025-01-01T00:00:00Z"}).json()["data"] == []
    with pytest.raises(LookupError):
        school.complete(pid, course)
    other = school.complete()
    assert other is not item and other["attributes"]["completed_at"] == "2025-01-01T00:00:02Z"
    assert _at(school.events[-1]) == "2025-01-01T00:00:02Z" and len(school.events) == 652


def test_all_courses_properties_list_the_readable_courses_and_archived_versions(server, http, school):
    rows = fetch_all(http, server, "/v2/properties/courses", limit=5)
    readable = [c for c, props in school.course_properties.items() if props is not None]
    archived = [r["attributes"]["course_id"] for r in school.archived_course_properties]
    assert len(rows) == 12 and len(readable) == 10 and len(archived) == 2 and set(archived).isdisjoint(school.courses)
    assert sorted(r["attributes"]["course_id"] for r in rows) == sorted(readable + archived)
    assert ids(rows) == sorted(set(ids(rows)))  # no created_at: by id
    for row in rows:
        assert set(row) == {"id", "type", "attributes"} and row["type"] == "course_properties"
        attributes = row["attributes"]
        assert list(attributes) == ["course_id", "version_number", "npcu", "credit_value", "properties"]
        single = get(http, server, f"/v2/properties/courses/{attributes['course_id']}")
        if attributes["course_id"] in archived:
            assert single.status_code == 404
        else:
            assert {"credit_value": attributes["credit_value"], "properties": attributes["properties"]} \
                == single.json()["data"]["attributes"]
            assert attributes["version_number"] == school.course_versions[attributes["course_id"]]["version_number"]
    by_version = fetch_all(http, server, "/v2/properties/courses", limit=5, sort="-version_number")
    assert ids(by_version) == expected_order(rows, ("version_number", True))


def test_the_later_kinds_change_nothing_generated_before_them():
    def old_kinds(school):
        return json.dumps([school.id, school.people, school.courses, school.enrollments, school.groups,
                           school.learning_paths, school.learning_path_enrollments, school.categories,
                           school.activities, school.course_progresses, school.course_properties], sort_keys=True)

    plain = School.generate(**SIZES, seed=7, quizzes=0, archived_course_versions=0)
    rich = School.generate(**SIZES, seed=7, quizzes=9, events=300, event_burst=120, archived_course_versions=4)
    assert hashlib.sha256(old_kinds(plain).encode()).hexdigest() == \
        "541d7ff216963573faef6a5823a94bd2c3951796129ced31cc030801bf58d921"  # what the seed made before them
    assert old_kinds(rich) == old_kinds(plain)
    assert (len(plain.quizzes), len(plain.events), len(plain.archived_course_properties)) == (0, 0, 0)
    assert (len(rich.quizzes), len(rich.events), len(rich.archived_course_properties)) == (9, 420, 4)
    again = School.generate(**SIZES, seed=7, quizzes=9, events=300, event_burst=120, archived_course_versions=4)
    assert [again.quizzes, again.events, again.transcripts, again.archived_course_properties] == \
        [rich.quizzes, rich.events, rich.transcripts, rich.archived_course_properties]


# ---------------------------------------------------------------- paging
def test_paging_follows_links_and_clamps_limit(server, http):
    first = get(http, server, "/v2/people").json()
    assert len(first["data"]) == 10  # default_limit
    assert "prev" not in first["links"]
    assert first["links"]["next"] == f"{server.url}/v2/people?page=2"
    clamped = get(http, server, "/v2/people", limit=1000, page=2).json()
    assert len(clamped["data"]) == 100  # silently clamped to max_limit
    assert clamped["links"]["next"] == f"{server.url}/v2/people?limit=1000&page=3"
    assert clamped["links"]["prev"] == f"{server.url}/v2/people?limit=1000&page=1"
    last = get(http, server, "/v2/people", limit=1000, page=3).json()
    assert len(last["data"]) == 100 and "next" not in last["links"]
    assert len(set(ids(fetch_all(http, server, "/v2/people", limit=7)))) == 300


def test_links_repeat_the_other_query_parameters(server, http):
    body = get(http, server, "/v2/people", **{"filter[name][cont]": "a", "sort": "-created_at", "limit": 5}).json()
    assert body["links"]["next"] == f"{server.url}/v2/people?filter[name][cont]=a&sort=-created_at&limit=5&page=2"


def test_page_past_the_end_is_empty_without_next(server, http):
    body = get(http, server, "/v2/people", limit=100, page=9).json()
    assert body["data"] == [] and "next" not in body["links"] and body["links"]["prev"].endswith("page=8")


@pytest.mark.parametrize("params", [{"page": "abc"}, {"page": "0"}, {"limit": "-1"}, {"limit": ""},
                                    {"filter[name][like]": "x"}])
def test_invalid_paging_or_predicate_is_400(server, http, params):
    response = get(http, server, "/v2/people", **params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["status"] == "400"


# ---------------------------------------------------------------- filters and sorting
def _people(school):
    return list(school.people.values())


@pytest.mark.parametrize("param, value, keep", [
    ("filter[registration_status][eq]", "invited", lambda a: a["registration_status"] == "invited"),
    ("filter[registration_status][not_eq]", "invited", lambda a: a["registration_status"] != "invited"),
    ("filter[email][cont]", "LOVELACE", lambda a: "lovelace" in a["email"]),
    ("filter[name]", "ada", lambda a: "ada" in a["name"].lower()),
    ("filter[created_at][gt]", "2022-06-01T00:00:00Z", lambda a: a["created_at"] > "2022-06-01T00:00:00Z"),
    ("filter[created_at][gteq]", "2022-06-01", lambda a: a["created_at"] >= "2022-06-01"),
    ("filter[updated_at][lt]", "2021-01-01T00:00:00Z", lambda a: a["updated_at"] < "2021-01-01T00:00:00Z"),
    ("filter[updated_at][lteq]", "2021-01-01T00:00:00Z", lambda a: a["updated_at"] <= "2021-01-01T00:00:00Z"),
    ("filter[disabled][eq]", "true", lambda a: a["disabled"]),
    ("filter[activated_at][not_eq]", "x", lambda a: True),
    ("filter[no_such_attribute][eq]", "x", lambda a: True),
])
def test_filter_predicates(server, http, school, param, value, keep):
    expected = {p["id"] for p in _people(school) if keep(p["attributes"])}
    assert 0 < len(expected)
    assert set(ids(fetch_all(http, server, "/v2/people", limit=100, **{param: value}))) == expected


def test_filter_boundaries_are_exact(server, http, school):
    person = _people(school)[17]
    stamp = person["attributes"]["created_at"]
    for predicate, included in [("gt", False), ("gteq", True), ("lt", False), ("lteq", True), ("eq", True)]:
        found = ids(fetch_all(http, server, "/v2/people", limit=100, **{f"filter[created_at][{predicate}]": stamp}))
        assert (person["id"] in found) is included, predicate


def test_filter_in_on_id_and_numbers_and_several_filters_and_together(server, http, school):
    wanted = list(school.people)[:3]
    found = fetch_all(http, server, "/v2/people", **{"filter[id][in]": ",".join(wanted + ["nope"])})
    assert set(ids(found)) == set(wanted)
    course = max(school.enrollments, key=lambda c: len(school.enrollments[c]))
    path = f"/v2/courses/{course}/enrollments"
    done = fetch_all(http, server, path, limit=100, **{"filter[progress][gteq]": "100"})
    assert done and all(e["attributes"]["progress"] == 100 for e in done)
    some = fetch_all(http, server, path, limit=100, **{"filter[progress][in]": "0,100"})
    assert {e["attributes"]["progress"] for e in some} == {0, 100}
    both = fetch_all(http, server, "/v2/people", limit=100, **{"filter[registration_status][eq]": "registered",
                                                               "filter[created_at][gteq]": "2023-01-01"})
    expected = {p["id"] for p in _people(school) if p["attributes"]["registration_status"] == "registered"
                and p["attributes"]["created_at"] >= "2023-01-01"}
    assert set(ids(both)) == expected


def test_ignore_filters_returns_everything(server, http):
    server.ignore_filters = True
    assert len(fetch_all(http, server, "/v2/people", limit=100, **{"filter[email][eq]": "nobody"})) == 300


@pytest.mark.parametrize("flag, params, said", [
    ("refuse_filters", {"filter[updated_at][gteq]": "2020-01-01T00:00:00Z"}, "Filter not allowed"),
    ("refuse_sort", {"sort": "updated_at"}, "Invalid sort criteria"),
])
def test_a_strict_server_refuses_filters_or_sort_with_400(server, http, flag, params, said):
    setattr(server, flag, True)
    refused = http.get(f"{server.url}/v2/people", params={"limit": 10, **params}, headers={"X-Api-Key": KEY})
    assert refused.status_code == 400 and said in refused.json()["errors"][0]["detail"]
    plain = http.get(f"{server.url}/v2/people", params={"limit": 10, "page": 2}, headers={"X-Api-Key": KEY})
    assert plain.status_code == 200 and len(plain.json()["data"]) == 10


def test_default_order_is_created_at_then_id(server, http, school):
    assert ids(fetch_all(http, server, "/v2/people", limit=100)) == expected_order(_people(school), ("created_at", False))
    course = max(school.enrollments, key=lambda c: len(school.enrollments[c]))
    enrollments = fetch_all(http, server, f"/v2/courses/{course}/enrollments", limit=100)
    assert ids(enrollments) == expected_order(school.enrollments[course], ("enrolled_at", False))


@pytest.mark.parametrize("sort, keys", [
    ("updated_at", [("updated_at", False)]),
    ("-updated_at", [("updated_at", True)]),
    ("-id", [("id", True)]),
    ("registration_status,-created_at", [("registration_status", False), ("created_at", True)]),
    ("-disabled,activated_at", [("disabled", True), ("activated_at", False)]),
    ("unknown,last_name", [("last_name", False)]),
])
def test_sort(server, http, school, sort, keys):
    people = _people(school)
    if keys == [("id", True)]:
        expected = sorted(school.people, reverse=True)
    else:
        expected = expected_order(people, *keys)
    assert ids(fetch_all(http, server, "/v2/people", limit=100, sort=sort)) == expected


def test_ignore_sort_keeps_the_default_order(server, http, school):
    server.ignore_sort = True
    got = ids(fetch_all(http, server, "/v2/people", limit=100, sort="-updated_at"))
    assert got == expected_order(_people(school), ("created_at", False))


# ---------------------------------------------------------------- rate limit and latency
@pytest.mark.parametrize("retry_after", [True, False])
def test_burst_over_the_rate_limit_gets_429(school, http, retry_after):
    with FakeNorthpass(school, api_key=KEY, rate_limit=10, retry_after=retry_after) as server:
        responses = [http.get(server.url + "/v2/categories", timeout=10) for _ in range(15)]
        assert [r.status_code for r in responses[:10]] == [200] * 10
        limited = responses[10]
        assert limited.status_code == 429 and limited.json()["errors"][0]["status"] == "429"
        assert limited.headers.get("Retry-After") == ("1" if retry_after else None)
        assert server.count(status=429) >= 1 and server.count(status=200) == 10
        time.sleep(1.05)
        assert http.get(server.url + "/v2/categories", timeout=10).status_code == 200


def test_a_token_bucket_limiter_admits_its_burst_then_one_per_interval(school, http):
    with FakeNorthpass(school, api_key=KEY, rate_limit=1, limiter="bucket", burst=3) as server:
        assert [http.get(server.url + "/v2/categories", timeout=10).status_code for _ in range(4)] == [200] * 3 + [429]
        time.sleep(1.05)  # one token back (1 per second)
        assert [http.get(server.url + "/v2/categories", timeout=10).status_code for _ in range(2)] == [200, 429]


def test_a_fixed_window_limiter_starts_counting_again_on_each_clock_second(school, http):
    with FakeNorthpass(school, api_key=KEY, rate_limit=10, limiter="fixed") as server:
        time.sleep(1.3 - time.monotonic() % 1)  # 0.3 s into a second
        assert [http.get(server.url + "/v2/categories", timeout=10).status_code for _ in range(10)] == [200] * 10
        time.sleep(1.02 - time.monotonic() % 1)  # the next second: a moving window would still refuse
        statuses = [http.get(server.url + "/v2/categories", timeout=10).status_code for _ in range(11)]
        assert statuses == [200] * 10 + [429]


def test_an_unknown_limiter_is_refused(school):
    with pytest.raises(ValueError, match="limiter"):
        FakeNorthpass(school, limiter="leaky")


def test_latency_does_not_block_concurrent_requests(school):
    with FakeNorthpass(school, api_key=KEY, rate_limit=None, latency=0.4) as server:
        statuses = []

        def call():
            statuses.append(requests.get(server.url + "/v2/people", headers={"X-Api-Key": KEY}, timeout=10,
                                         proxies={"http": None}).status_code)

        threads = [threading.Thread(target=call) for _ in range(6)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        assert statuses == [200] * 6
        assert 0.4 <= elapsed < 1.2


@pytest.mark.parametrize("after", [False, True])
def test_the_rate_limit_is_checked_on_arrival_or_after_the_latency(school, http, after):
    with FakeNorthpass(school, api_key=KEY, rate_limit=1, latency=0.3, limit_after_latency=after) as server:
        assert http.get(server.url + "/v2/categories", timeout=10).status_code == 200
        started = time.monotonic()
        limited = http.get(server.url + "/v2/categories", timeout=10)
        took = time.monotonic() - started
        assert limited.status_code == 429
        assert (took >= 0.3) if after else (took < 0.2), took


def test_jitter_spreads_each_requests_latency_within_its_bounds(school, http):
    with FakeNorthpass(school, api_key=KEY, rate_limit=None, latency=0.1, jitter=0.05) as server:
        took = []
        for _ in range(12):
            started = time.monotonic()
            assert http.get(server.url + "/v2/categories", timeout=10).status_code == 200
            took.append(time.monotonic() - started)
    assert 0.05 <= min(took) and max(took) < 0.2, took
    assert max(took) - min(took) > 0.02, took


# ---------------------------------------------------------------- faults
@pytest.mark.parametrize("kind", ["500", "502", "503"])
def test_injected_error_status(server, http, kind):
    server.inject(r"^/v2/people$", kind, times=2)
    assert get(http, server, "/v2/courses").status_code == 200  # another path is untouched
    for _ in range(2):
        response = get(http, server, "/v2/people")
        assert response.status_code == int(kind)
        assert response.json()["errors"][0]["status"] == kind
    assert get(http, server, "/v2/people").status_code == 200


def test_injected_html_page(server, http):
    server.inject("/v2/people", "html")
    response = get(http, server, "/v2/people")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


def test_injected_answer_without_data(server, http):
    server.inject("/v2/people", "no_data")
    response = get(http, server, "/v2/people")
    assert response.status_code == 200 and "data" not in response.json()


def test_injected_connection_reset(server, http):
    server.inject("/v2/people", "reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        get(http, server, "/v2/people")
    assert get(http, server, "/v2/people").status_code == 200
    assert [r.status for r in server.requests] == [0, 200]


def test_injected_slow_answer(server, http):
    server.slow_seconds = 0.3
    server.inject("/v2/people", "slow")
    started = time.monotonic()
    response = get(http, server, "/v2/people")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200 and len(response.json()["data"]) == 10


def test_injected_repeat_serves_the_previous_page_with_this_pages_links(server, http):
    page1 = get(http, server, "/v2/people", limit=5, page=1).json()
    server.inject("/v2/people", "repeat")
    page2 = get(http, server, "/v2/people", limit=5, page=2).json()
    assert page2["data"] == page1["data"]
    assert page2["links"]["self"].endswith("page=2") and page2["links"]["next"].endswith("page=3")
    assert get(http, server, "/v2/people", limit=5, page=2).json()["data"] != page1["data"]


def test_unknown_fault_kind_is_refused(server):
    with pytest.raises(ValueError):
        server.inject("/v2/people", "teapot")


@pytest.mark.parametrize("status", [403, 404])
def test_forbid_answers_every_matching_request(server, http, school, status):
    server.forbid(r"^/v2/courses/[^/]+/enrollments$", status=status)
    course = next(iter(school.courses))
    for _ in range(3):
        response = get(http, server, f"/v2/courses/{course}/enrollments")
        assert response.status_code == status
        assert response.json()["errors"][0]["status"] == str(status)
    assert get(http, server, f"/v2/courses/{course}").status_code == 200
    with pytest.raises(ValueError):
        server.forbid("/v2/people", status=500)


# ---------------------------------------------------------------- log, stats, callbacks
def test_request_log_and_count(server, http):
    get(http, server, "/v2/people", limit=3)
    get(http, server, "/v2/people/nope")
    http.get(server.url + "/v2/people", headers={"X-Api-Key": "bad"}, timeout=10)
    assert [(r.method, r.path, r.status) for r in server.requests] == [
        ("GET", "/v2/people", 200), ("GET", "/v2/people/nope", 404), ("GET", "/v2/people", 401)]
    assert server.requests[0].query == {"limit": "3"}
    assert server.count() == 3 and server.count("/v2/people") == 2 and server.count("/v2/people*") == 3
    assert server.count(status=404) == 1 and server.count("/v2/people", status=200) == 1
    stats = requests.get(server.url + "/_stats", timeout=10, proxies={"http": None}).json()
    assert stats == {"requests": 3, "by_status": {"200": 1, "401": 1, "404": 1}}
    server.reset_log()
    assert server.count() == 0 and server.requests == []


def test_on_request_runs_after_each_list_page_and_can_mutate(server, http, school):
    seen = []

    def mutate(srv, entry):
        seen.append((entry.path, entry.query.get("page"), entry.status))
        if len(seen) == 1:
            srv.school.create_person()

    server.on_request = mutate
    people = fetch_all(http, server, "/v2/people", limit=100)
    assert len(people) == 301  # created after page 1; sorts last (newest created_at)
    assert seen == [("/v2/people", None, 200), ("/v2/people", "2", 200), ("/v2/people", "3", 200),
                    ("/v2/people", "4", 200)]
    get(http, server, "/v2/people/nope")
    assert len(seen) == 4 and server.callback_errors == []


# ---------------------------------------------------------------- mutations and the clock
def test_clock_starts_after_all_data_and_ticks(school):
    assert school.clock == 1735689600
    assert school.tick() == "2025-01-01T00:00:01Z"
    assert school.tick() == "2025-01-01T00:00:02Z"


def test_mutations_stamp_updated_at_from_the_clock(server, http, school):
    person = school.update_person()
    assert school.people[person]["attributes"]["updated_at"] == "2025-01-01T00:00:01Z"
    served = get(http, server, "/v2/people", **{"filter[updated_at][gteq]": "2025-01-01T00:00:00Z"}).json()["data"]
    assert ids(served) == [person]
    chosen = list(school.people)[5]
    assert school.update_person(chosen, first_name="Zed") == chosen
    assert school.people[chosen]["attributes"]["first_name"] == "Zed"
    assert school.people[chosen]["attributes"]["updated_at"] == "2025-01-01T00:00:02Z"
    course, group = school.update_course(), school.update_group()
    assert school.courses[course]["attributes"]["updated_at"] == "2025-01-01T00:00:03Z"
    assert school.groups[group]["attributes"]["updated_at"] == "2025-01-01T00:00:04Z"
    assert school.update_group(group, updated_at="2030-01-01T00:00:00Z") == group
    assert school.groups[group]["attributes"]["updated_at"] == "2030-01-01T00:00:00Z"
    new = school.create_person()
    assert school.people[new]["attributes"]["created_at"] == school.people[new]["attributes"]["updated_at"] \
        == "2025-01-01T00:00:05Z"
    assert get(http, server, f"/v2/people/{new}").status_code == 200
    gone = school.delete_person()
    assert gone not in school.people and get(http, server, f"/v2/people/{gone}").status_code == 404


def test_bulk_import_shares_one_timestamp(server, http, school):
    stamp = "2023-05-05T05:05:05Z"
    imported = school.bulk_import(25, stamp)
    assert len(set(imported)) == 25
    found = fetch_all(http, server, "/v2/people", limit=100, **{"filter[created_at][eq]": stamp})
    assert sorted(ids(found)) == sorted(imported)
    assert {p["attributes"]["updated_at"] for p in found} == {stamp}
    assert ids(found) == sorted(imported)  # same created_at: id breaks the tie
    assert school.clock == 1735689600


def test_same_seed_same_school_and_mutations():
    def snapshot(school):
        school.update_person()
        school.create_person()
        return json.dumps([school.people, school.courses, school.enrollments, school.groups,
                           school.learning_paths, school.learning_path_enrollments, school.categories,
                           school.activities, school.course_progresses, school.course_properties],
                          sort_keys=True)

    assert snapshot(School.generate(**SIZES, seed=7)) == snapshot(School.generate(**SIZES, seed=7))
    assert snapshot(School.generate(**SIZES, seed=7)) != snapshot(School.generate(**SIZES, seed=8))


# ---------------------------------------------------------------- CLI
@pytest.mark.parametrize("command", [["integration_tests/fake_northpass.py"], ["-m", "integration_tests.fake_northpass"]])
def test_cli_serves_until_sigterm(tmp_path, command):
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, *command, "--port", "0", "--people", "30", "--courses", "3", "--enrollments", "20",
         "--quizzes", "2", "--events", "30", "--event-burst", "101",
         "--latency", "0", "--rate-limit", "0", "--api-key", "cli-key", "--port-file", str(port_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": ""})
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("fake northpass listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert port_file.read_text().strip() == url.rsplit(":", 1)[1]
        response = requests.get(url + "/v2/people", headers={"X-Api-Key": "cli-key"}, timeout=10,
                                proxies={"http": None})
        assert response.status_code == 200 and len(response.json()["data"]) == 10
        assert requests.get(url + "/_stats", timeout=10, proxies={"http": None}).json()["requests"] == 1
        quizzes, events = (requests.get(url + path, params={"limit": 100}, headers={"X-Api-Key": "cli-key"},
                                        timeout=10, proxies={"http": None}).json()
                           for path in ("/v2/quizzes", "/v2/events"))
        assert len(quizzes["data"]) == 2 and len(events["data"]) == 100 and events["links"]["next"].endswith("page=2")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0
        assert json.loads(stderr.strip().splitlines()[-1]) == {"requests": 3, "by_status": {"200": 3}}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- list caches
def _walk(http, server, stamp):
    """ids of people with updated_at >= stamp, by updated_at then id, in pages of 100."""
    return ids(fetch_all(http, server, "/v2/people", limit=100, sort="updated_at",
                         **{"filter[updated_at][gteq]": stamp}))


def test_cached_lists_see_every_mutation(server, http, school):
    stamp = "2024-01-01T00:00:00Z"
    before = _walk(http, server, stamp)
    assert before == expected_order([p for p in _people(school) if p["attributes"]["updated_at"] >= stamp],
                                    ("updated_at", False))
    version = school.version
    moved = before[0]
    school.update_person(moved)  # now the newest: last in the walk
    assert school.version > version
    assert _walk(http, server, stamp) == before[1:] + [moved]
    school.update_person(moved, updated_at="2020-01-01T00:00:00Z")  # out of the range
    assert _walk(http, server, stamp) == before[1:]
    new = school.create_person()
    gone = before[1]
    school.delete_person(gone)
    assert _walk(http, server, stamp) == before[2:] + [new]
    imported = school.bulk_import(3, "2024-06-01T00:00:00Z")
    assert set(imported) <= set(_walk(http, server, stamp))
    by_id = get(http, server, "/v2/people", limit=100, sort="id",
                **{"filter[updated_at][eq]": "2024-06-01T00:00:00Z"}).json()["data"]
    assert ids(by_id) == sorted(imported)
    # a direct edit is seen once the school is touched
    school.people[new]["attributes"]["updated_at"] = "2019-06-01T00:00:00Z"
    school.touch()
    assert new not in _walk(http, server, stamp)


def test_cached_lists_agree_with_the_reference_filter_and_sort(server, http, school):
    from integration_tests.fake_northpass import apply_filters, apply_sort, parse_filters

    school.update_person(list(school.people)[3], score=5)  # attributes only some records have
    school.update_person(list(school.people)[4], score=12.5, nickname=None)
    school.bulk_import(4, "2022-02-02T02:02:02Z")
    people = _people(school)
    stamp = sorted(p["attributes"]["updated_at"] for p in people)[150]
    first = sorted(school.people)[100]
    queries = [
        {"sort": "updated_at", "filter[updated_at][gteq]": stamp},
        {"sort": "updated_at", "filter[updated_at][gt]": stamp},
        {"sort": "updated_at", "filter[updated_at][eq]": "2022-02-02T02:02:02Z"},
        {"sort": "updated_at", "filter[updated_at][lt]": stamp, "filter[registration_status][eq]": "invited"},
        {"sort": "id", "filter[updated_at][eq]": "2022-02-02T02:02:02Z", "filter[id][gt]": first},
        {"sort": "id", "filter[updated_at][lteq]": stamp, "filter[id][gt]": first},
        {"sort": "-updated_at", "filter[updated_at][gteq]": stamp},
        {"sort": "activated_at,-id", "filter[activated_at][lt]": "2021"},
        {"sort": "score", "filter[score][gt]": "6"},
        {"sort": "nickname"},
        {"filter[score][gteq]": "5", "filter[created_at][gteq]": "2019"},
        {"filter[updated_at][eq]": "2022-02-02T02:02:02Z", "sort": "updated_at"},
        {},
    ]
    for query in queries:
        expected = apply_sort(apply_filters(people, parse_filters(query)), query.get("sort"), "created_at")
        for limit in (7, 100):
            assert ids(fetch_all(http, server, "/v2/people", limit=limit, **query)) == ids(expected), query


def test_lists_stay_ordered_while_the_school_changes(server, http, school):
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            school.update_person()
            school.create_person()

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(20):
            page = get(http, server, "/v2/people", limit=100, sort="updated_at",
                       **{"filter[updated_at][gteq]": "2024-06-01T00:00:00Z"}).json()["data"]
            keys = [(p["attributes"]["updated_at"], p["id"]) for p in page]
            assert keys == sorted(keys) and all(k[0] >= "2024-06-01T00:00:00Z" for k in keys)
    finally:
        stop.set()
        thread.join()
