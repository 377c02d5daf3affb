"""The streams beyond the public connector's three, against the fake server: every record of
every stream, forbidden children skipped, parents gone mid-sync skipped, incremental parents."""

import pytest

from integration_tests.connector import catalog_for, run_connector
from integration_tests.fake_northpass import FakeNorthpass, School

API_KEY = "more-streams-key-91b3"


@pytest.fixture
def school():
    return School.generate(people=140, courses=10, enrollments=160, groups=5, learning_paths=3, categories=4,
                           activities_per_course=3, seed=5)


@pytest.fixture
def server(school):
    with FakeNorthpass(school, api_key=API_KEY, max_limit=100, rate_limit=None) as running:
        yield running


def _config(server):
    return {"api_key": API_KEY, "base_url": server.url, "page_size": 50, "requests_per_second": 100}


def _expected(school):
    with school.lock:
        return {
            "groups": sorted(school.groups),
            "group_memberships": sorted(
                (g["id"], pid) for pid, p in school.people.items() for g in p["relationships"]["groups"]["data"]
            ),
            "learning_paths": sorted(school.learning_paths),
            "learning_path_enrollments": sorted(e["id"] for lp in school.learning_paths for e in school.learning_path_enrollments.get(lp, [])),
            "categories": sorted(school.categories),
            "course_activities": sorted((c, a["id"]) for c in school.courses for a in school.activities.get(c, [])),
            "course_properties": sorted((r["attributes"]["course_id"], r["id"]) for r in school.course_property_rows()),
            "person_course_progresses": sorted((p, cp["id"]) for p in school.people for cp in school.course_progresses.get(p, [])),
        }


KEYS = {
    "group_memberships": ("group_id", "person_id"),
    "course_activities": ("course_id", "id"),
    "course_properties": ("course_id", "id"),
    "person_course_progresses": ("person_id", "id"),
}


def _keys(run, stream):
    fields = KEYS.get(stream, ("id",))
    return sorted(tuple(r[f] for f in fields) if len(fields) > 1 else r[fields[0]] for r in run.records(stream))


def test_every_record_of_every_new_stream_exactly_once(server, school, runner):
    expected = _expected(school)
    run = run_connector("read", _config(server), catalog_for(expected), runner=runner)

    assert run.returncode == 0, run.output()[-3000:]
    for stream, keys in expected.items():
        assert keys, f"the fake school has {stream}"
        assert _keys(run, stream) == keys, stream


def test_a_parent_deleted_between_its_read_and_its_childrens_read_is_skipped_with_a_warning(server, school, runner):
    deleted = []

    def delete_someone_on_the_page(server, entry):
        if entry.path == "/v2/people" and not deleted:
            with school.lock:
                deleted.append(school.delete_person(sorted(school.people)[0]))

    server.on_request = delete_someone_on_the_page
    run = run_connector("read", _config(server), catalog_for(["person_course_progresses"]), runner=runner)

    assert run.returncode == 0, run.output()[-3000:]
    assert deleted
    # The person was deleted after the people page was served: either the page still listed them
    # (their progresses answer 404: one warning) or it no longer did (nothing to read).
    if server.count(f"/v2/people/{deleted[0]}/course_progresses"):
        assert any(deleted[0] in w and "404" in w for w in run.logs("WARN"))
    assert {r["person_id"] for r in run.records()} <= set(school.people)


def test_person_course_progresses_incremental_asks_only_about_people_changed_since_the_last_sync(server, school, runner):
    catalog = catalog_for(["person_course_progresses"], sync_mode="incremental")
    first = run_connector("read", _config(server), catalog, runner=runner)
    assert first.returncode == 0
    assert server.count("/v2/people/*") >= len(school.people)
    state = [{"type": "STREAM", "stream": first.states()[-1]["stream"]}]

    changed = {school.update_person() for _ in range(3)}
    server.reset_log()
    second = run_connector("read", _config(server), catalog, state=state, runner=runner)

    assert second.returncode == 0, second.output()[-3000:]
    asked = {r.path.split("/")[3] for r in server.requests if r.path.endswith("/course_progresses")}
    assert changed <= asked
    assert len(asked) <= len(changed) + 2, "only people changed since the last sync (and the boundary)"
