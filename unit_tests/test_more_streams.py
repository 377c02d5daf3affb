"""Exact requests of the streams beyond the public connector's three."""

import requests_mock

from airbyte_cdk.models import SyncMode

from unit_tests.harness import log_lines, record_data, run_read
from unit_tests.northpass_builders import NorthpassRequest, config, course, error, ok, page, person, resource_id, status


def _group(n):
    return {"id": resource_id("groups", n), "type": "groups", "attributes": {"name": f"Group {n}", "updated_at": "2024-01-01T00:00:00Z"}}


def test_group_memberships_read_each_groups_people_with_both_ids_flat():
    with requests_mock.Mocker() as http:
        NorthpassRequest("groups").with_limit(100).with_page(1).with_sort("updated_at").mock(http, ok(page([_group(1), _group(2)])))
        NorthpassRequest(f"groups/{resource_id('groups', 1)}/people").with_limit(100).with_page(1).mock(
            http, ok(page([person(1), person(2)]))
        )
        NorthpassRequest(f"groups/{resource_id('groups', 2)}/people").with_limit(100).with_page(1).mock(http, ok(page([person(1)])))
        output = run_read(config(), ["group_memberships"])

    pairs = sorted((r["group_id"], r["person_id"]) for r in record_data(output))
    assert pairs == sorted(
        [(resource_id("groups", 1), resource_id("people", 1)), (resource_id("groups", 1), resource_id("people", 2)),
         (resource_id("groups", 2), resource_id("people", 1))]
    )
    assert all(r["email"].endswith("@example.com") for r in record_data(output)), "the person's attributes come along"


def test_person_course_progresses_in_incremental_ask_only_about_people_changed_since_the_state():
    since = "2024-01-01T00:00:05Z"
    progress = {"id": "p1", "type": "course_progresses", "attributes": {"course_id": "c1", "progress": 10, "updated_at": "2024-06-01T00:00:00Z"}}
    state = {"state": {"updated_at": "2024-05-01T00:00:00Z"}, "parent_state": {"people": {"updated_at": since}}, "use_global_cursor": True}
    with requests_mock.Mocker() as http:
        # The newest people reach back past the state: the people changed since, in one request.
        NorthpassRequest.people_unfiltered("-updated_at").mock(http, ok(page([person(6), person(5), person(4)], True)))
        NorthpassRequest.people_unfiltered("updated_at").mock(http, ok(page([person(0)], True)))  # none undated
        for n in (5, 6):
            NorthpassRequest(f"people/{resource_id('people', n)}/course_progresses").with_limit(100).with_page(1).mock(
                http, ok(page([progress]))
            )
        output = run_read(config(), ["person_course_progresses"], state={"person_course_progresses": state}, sync_mode=SyncMode.incremental)

    assert sorted(r["person_id"] for r in record_data(output)) == sorted([resource_id("people", 5), resource_id("people", 6)])
    assert http.call_count == 4


def test_parent_and_person_ids_stay_strings_even_when_they_look_like_numbers():
    group = {**_group(1), "id": "1042"}
    member = {**person(1), "id": "007"}
    with requests_mock.Mocker() as http:
        NorthpassRequest("groups").with_limit(100).with_page(1).with_sort("updated_at").mock(http, ok(page([group])))
        NorthpassRequest("groups/1042/people").with_limit(100).with_page(1).mock(http, ok(page([member])))
        output = run_read(config(), ["group_memberships"])

    (record,) = record_data(output)
    assert (record["group_id"], record["person_id"]) == ("1042", "007")
