"""A customer whose Northpass differs from our guesses (../shared/northpass-api.md): learning paths
only at the hyphenated path, a group's people only as memberships, a plan without categories,
records without updated_at (a few, or a whole list), nulls sorted either way, 12% server faults.
With every stream selected, under both runners: exit 0, every stream the server serves complete,
the refused one named, and no state ahead of a record not emitted."""

import pytest

from integration_tests.connector import catalog_for, run_connector
from integration_tests.fake_northpass import FakeNorthpass, School

API_KEY = "guesses-key-5e21c0"
UPDATED_AT_STREAMS = ["people", "courses", "groups", "learning_paths", "categories"]
CHILD_STREAMS = ["course_enrollments", "group_memberships", "learning_path_enrollments", "course_activities",
                 "course_properties", "person_course_progresses"]
KEYS = {
    "course_enrollments": ("course_id", "id"),
    "group_memberships": ("group_id", "person_id"),
    "learning_path_enrollments": ("learning_path_id", "id"),
    "course_activities": ("course_id", "id"),
    "course_properties": ("course_id", "id"),
    "person_course_progresses": ("person_id", "id"),
}


@pytest.fixture
def school():
    school = School.generate(people=120, courses=8, enrollments=160, groups=4, learning_paths=3, categories=3,
                             activities_per_course=2, seed=23)
    school.undate("people", 4)  # updated_at: null
    school.undate("people", 3, absent=True)  # no updated_at at all
    school.undate("courses", 2)
    school.undate("groups", absent=True)  # a whole list without it
    return school


def _server(school, nulls_last):
    server = FakeNorthpass(school, api_key=API_KEY, max_limit=100, rate_limit=10)
    server.nulls_last = nulls_last
    server.learning_paths_at = "learning-paths"
    server.group_people_at = "memberships"
    server.forbid(r"^/v2/categories$", 403)
    return server


def _config(server):
    return {"api_key": API_KEY, "base_url": server.url, "page_size": 50, "max_retries": 8}


def _expected(school):
    with school.lock:
        people = school.people
        return {
            "people": sorted(people),
            "courses": sorted(school.courses),
            "groups": sorted(school.groups),
            "learning_paths": sorted(school.learning_paths),
            "course_enrollments": sorted((c, e["id"]) for c in school.courses for e in school.enrollments.get(c, [])),
            "group_memberships": sorted(
                (g["id"], pid) for pid, p in people.items() for g in p["relationships"]["groups"]["data"]
            ),
            "learning_path_enrollments": sorted(
                (lp, e["id"]) for lp in school.learning_paths for e in school.learning_path_enrollments.get(lp, [])
            ),
            "course_activities": sorted((c, a["id"]) for c in school.courses for a in school.activities.get(c, [])),
            "course_properties": sorted((r["attributes"]["course_id"], r["id"]) for r in school.course_property_rows()),
            "person_course_progresses": sorted((p, cp["id"]) for p in people for cp in school.course_progresses.get(p, [])),
        }


def _keys(run, stream):
    fields = KEYS.get(stream, ("id",))
    rows = [tuple(r[f] for f in fields) if len(fields) > 1 else r[fields[0]] for r in run.records(stream)]
    return sorted(set(rows)), len(rows)


def _assert_complete(run, school):
    assert run.returncode == 0, run.output()[-3000:]
    for stream, expected in _expected(school).items():
        assert expected, f"the fake school has {stream}"
        assert _keys(run, stream)[0] == expected, stream
    assert not run.records("categories")
    refused = [w for w in run.logs("WARN") if "Stream categories skipped" in w]
    assert len(refused) == 1 and "/v2/categories" in refused[0] and "HTTP 403" in refused[0]


def _assert_state_not_ahead(run, school, since=None):
    """Every record updated from the sync's starting state (`since`: stream -> updated_at) up to a
    state it emitted was emitted by the sync."""
    for message in run.states():
        stream, state = message["stream"]["stream_descriptor"]["name"], message["stream"]["stream_state"]
        if stream not in UPDATED_AT_STREAMS or "updated_at" not in state:
            continue
        start = (since or {}).get(stream, "")
        with school.lock:
            due = {i for i, r in getattr(school, stream).items()
                   if start <= (r["attributes"].get("updated_at") or "9") < state["updated_at"]}
        assert due <= {r["id"] for r in run.records(stream)}, (stream, state)


@pytest.mark.parametrize("nulls_last", [False, True], ids=["nulls first (MySQL)", "nulls last (Postgres)"])
def test_every_stream_the_server_serves_is_complete_with_faults_and_the_refused_one_named(school, nulls_last, runner):
    with _server(school, nulls_last) as server:
        server.fault_rate = 0.12
        streams = UPDATED_AT_STREAMS + CHILD_STREAMS
        run = run_connector("read", _config(server), catalog_for(streams, sync_mode="incremental"), runner=runner)
        faults = server.count(status=0) + sum(server.count(status=s) for s in (500, 502, 503))

    _assert_complete(run, school)
    _assert_state_not_ahead(run, school)
    assert faults > 0.05 * server.count(), "the faults were served"
    assert any("Stream groups: none of its records carries updated_at" in w for w in run.logs("WARN"))


@pytest.mark.parametrize("nulls_last", [False, True], ids=["nulls first (MySQL)", "nulls last (Postgres)"])
def test_an_incremental_sync_brings_the_changes_and_every_record_without_updated_at_again(school, nulls_last, runner):
    catalog = catalog_for(["people", "courses"], sync_mode="incremental")
    with _server(school, nulls_last) as server:
        first = run_connector("read", _config(server), catalog, runner=runner)
        assert first.returncode == 0, first.output()[-3000:]
        final = {}
        for message in first.states():
            final[message["stream"]["stream_descriptor"]["name"]] = message["stream"]
        changed = {school.update_person() for _ in range(5)}
        with school.lock:
            undated = {i for i, p in school.people.items() if not p["attributes"].get("updated_at")}
        server.reset_log()
        second = run_connector("read", _config(server), catalog, state=[{"type": "STREAM", "stream": s} for s in final.values()],
                               runner=runner)

    assert second.returncode == 0, second.output()[-3000:]
    emitted = {r["id"] for r in second.records("people")}
    assert changed | undated <= emitted
    assert len(emitted) <= len(changed | undated) + 3, "the changes, the undated, the boundary: not everyone again"
    assert server.count("/v2/people") <= 4, "one page of changes and at most two pages of each end of the order"
    _assert_state_not_ahead(second, school, {name: s["stream_state"]["updated_at"] for name, s in final.items()})


@pytest.mark.parametrize("spelling", ["learning_paths", "both"])
def test_learning_paths_are_complete_at_either_spelling_with_one_request_of_fallback(school, spelling, runner):
    with _server(school, nulls_last=False) as server:
        server.learning_paths_at = spelling
        server.group_people_at = "people"
        run = run_connector("read", _config(server), catalog_for(["learning_paths", "learning_path_enrollments",
                                                                  "group_memberships"]), runner=runner)
        hyphen = server.count("/v2/learning-paths*")

    assert run.returncode == 0, run.output()[-3000:]
    expected = _expected(school)
    for stream in ("learning_paths", "learning_path_enrollments", "group_memberships"):
        assert _keys(run, stream)[0] == expected[stream], stream
    assert hyphen == (1 if spelling == "learning_paths" else hyphen), "the hyphen is tried once, then never again"
    assert server.count("/v2/groups/*/memberships") == 0


def test_a_plan_without_learning_paths_skips_them_and_their_enrollments_with_one_warning(school, runner):
    with _server(school, nulls_last=False) as server:
        server.forbid(r"^/v2/learning[-_]paths", 404)
        run = run_connector("read", _config(server), catalog_for(["people", "learning_paths", "learning_path_enrollments"]),
                            runner=runner)

    assert run.returncode == 0, run.output()[-3000:]
    assert _keys(run, "people")[0] == sorted(school.people)
    assert not run.records("learning_paths") and not run.records("learning_path_enrollments")
    (warning,) = [w for w in run.logs("WARN") if "learning_paths" in w]
    assert "/v2/learning-paths and /v2/learning_paths" in warning and "HTTP 404" in warning


def test_check_fails_naming_the_refusal_when_people_is_refused_but_a_read_skips_it(school, runner):
    with _server(school, nulls_last=False) as server:
        server.forbid(r"^/v2/people$", 403)
        check = run_connector("check", _config(server), runner=runner)
        read = run_connector("read", _config(server), catalog_for(["people", "courses"]), runner=runner)

    assert check.connection_status()["status"] == "FAILED"
    assert "/v2/people" in check.connection_status()["message"] and "HTTP 403" in check.connection_status()["message"]
    assert read.returncode == 0 and _keys(read, "courses")[0] == sorted(school.courses)
    assert len([w for w in read.logs("WARN") if "Stream people skipped" in w]) == 1
