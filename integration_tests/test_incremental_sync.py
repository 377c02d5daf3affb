"""Incremental sync against the fake server while Northpass data changes, between and during
syncs: nothing that stood still is skipped, every change comes back, and a sync costs about
what changed."""

import math
import random

import pytest

from integration_tests.connector import catalog_for, kill_read_when, run_connector
from integration_tests.fake_northpass import FakeNorthpass, School

API_KEY = "incremental-test-key-5e8c2f"
PAGE_SIZE = 50


@pytest.fixture
def school():
    return School.generate(people=600, courses=6, enrollments=50, groups=2, learning_paths=1, categories=1, seed=23)


@pytest.fixture
def server(school):
    with FakeNorthpass(school, api_key=API_KEY, max_limit=100, rate_limit=None) as running:
        yield running


def _config(server, **overrides):
    return {"api_key": API_KEY, "base_url": server.url, "page_size": PAGE_SIZE, "requests_per_second": 100, **overrides}


def _sync(server, runner, mode="incremental", state=None, streams=("people",)):
    run = run_connector("read", _config(server), catalog_for(streams, sync_mode=mode), state=state, runner=runner)
    assert run.returncode == 0, run.output()[-3000:]
    return run


def _final_state(run, stream="people"):
    states = [s for s in run.states() if s["stream"]["stream_descriptor"]["name"] == stream]
    return [{"type": "STREAM", "stream": states[-1]["stream"]}]


class Churn:
    """Changes people while their pages are served: updates, creations and deletions."""

    def __init__(self, school, seed, tied=()):
        self.school = school
        self.random = random.Random(seed)
        self.touched = set()
        self.tied = list(tied)

    def __call__(self, server, entry):
        if entry.path != "/v2/people":
            return
        with self.school.lock:
            pool = self.tied if self.tied and self.random.random() < 0.5 else sorted(self.school.people)
            pool = [p for p in pool if p in self.school.people]
            for _ in range(2):
                self.touched.add(self.school.update_person(self.random.choice(pool)))
            self.touched.add(self.school.delete_person(self.random.choice(pool)))
            self.touched.add(self.school.create_person())


def _still(school, before, churn):
    with school.lock:
        return (before & set(school.people)) - churn.touched


@pytest.mark.parametrize("mode", ["full_refresh", "incremental"])
def test_everyone_who_stood_still_during_the_sync_is_emitted_while_others_change(server, school, runner, mode):
    before = set(school.people)
    churn = Churn(school, seed=1)
    server.on_request = churn
    run = _sync(server, runner, mode)

    emitted = {r["id"] for r in run.records("people")}
    assert churn.touched, "the data really changed during the sync"
    assert _still(school, before, churn) <= emitted


def test_a_page_number_walk_under_the_same_changes_skips_people(server, school):
    """The public connector's paging, for comparison: the test above would catch this."""
    import requests

    before = set(school.people)
    churn = Churn(school, seed=1)
    server.on_request = churn
    seen, number = set(), 1
    while True:
        document = requests.get(
            f"{server.url}/v2/people", params={"page": number, "limit": PAGE_SIZE}, headers={"X-Api-Key": API_KEY}
        ).json()
        seen |= {r["id"] for r in document["data"]}
        if not document["links"].get("next"):
            break
        number += 1
    assert _still(school, before, churn) - seen, "offset paging skips people who never changed"


def test_a_second_sync_returns_every_change_at_about_one_request_per_page_of_changes(server, school, runner):
    first = _sync(server, runner)
    changed = {school.update_person() for _ in range(120)}
    created = {school.create_person() for _ in range(5)}
    server.reset_log()
    second = _sync(server, runner, state=_final_state(first))

    emitted = {r["id"] for r in second.records("people")}
    assert changed | created <= emitted
    changes = len(changed | created)
    # the newest page, the walk from the state, the oldest page (where records without updated_at may be)
    assert server.count("/v2/people") <= math.ceil(changes / PAGE_SIZE) + 2
    assert len(emitted) <= changes + 2, "only what changed, plus the record(s) at the saved boundary"

    server.reset_log()
    third = _sync(server, runner, state=_final_state(second))
    assert server.count("/v2/people") == 2, "the newest page reaches back past the state; the oldest page"
    assert len(third.records("people")) <= 2, "a sync with no changes is nearly empty"


def test_a_bulk_import_sharing_one_second_is_emitted_exactly_once_while_it_changes(server, school, runner):
    first = _sync(server, runner)
    bulk = set(school.bulk_import(330, timestamp=school.tick()))  # more than six pages at one second
    churn = Churn(school, seed=7, tied=sorted(bulk))
    server.on_request = churn
    second = _sync(server, runner, state=_final_state(first))

    ids = [r["id"] for r in second.records("people")]
    stood_still = bulk - churn.touched
    assert stood_still <= set(ids)
    assert all(ids.count(i) == 1 for i in stood_still), "no tied person twice within one sync"
    updated_during = {i for i in churn.touched if i in school.people}
    server.on_request = None
    third = _sync(server, runner, state=_final_state(second))
    assert updated_during <= {r["id"] for r in second.records("people")} | {r["id"] for r in third.records("people")}


@pytest.mark.parametrize("ignored", ["ignore_filters", "ignore_sort", "refuse_filters", "refuse_sort"])
def test_a_server_ignoring_or_refusing_filter_or_sort_still_gives_a_correct_sync_with_one_warning(server, school, runner, ignored):
    first = _sync(server, runner)
    changed = {school.update_person() for _ in range(PAGE_SIZE + 10)}  # more than the newest page holds
    setattr(server, ignored, True)
    second = _sync(server, runner, state=_final_state(first))

    emitted = {r["id"] for r in second.records("people")}
    assert changed <= emitted
    older = {pid for pid, p in school.people.items() if p["attributes"]["updated_at"] < _final_state(first)[0]["stream"]["stream_state"]["updated_at"]}
    assert not (emitted & older), "records older than the cursor are not emitted as new"
    warnings = [w for w in second.logs("WARN") if "reading the whole list" in w]
    assert len(warnings) == 1


def test_a_sync_stopped_half_way_resumes_from_its_last_checkpoint_rereading_about_a_page(server, school, runner):
    full = _sync(server, runner)
    checkpoints = [s for s in full.states() if s["stream"]["stream_descriptor"]["name"] == "people"]
    assert len(checkpoints) >= 5, "state is checkpointed during the stream"
    middle = checkpoints[len(checkpoints) // 2]
    cut = middle["stream"]["stream_state"]["updated_at"]
    emitted_before_cut = sum(1 for r in full.records("people") if r["updated_at"] < cut)

    resumed = _sync(server, runner, state=[{"type": "STREAM", "stream": middle["stream"]}])
    reread = len(resumed.records("people"))
    assert reread <= len(school.people) - emitted_before_cut + PAGE_SIZE
    assert {r["id"] for r in full.records("people") if r["updated_at"] >= cut} <= {r["id"] for r in resumed.records("people")}


def test_a_killed_sync_resumes_from_its_last_state_and_loses_no_one(school, runner):
    """A worker lost mid-sync (SIGKILL after its third checkpoint): the next sync starts from the
    last state the platform received, and the two syncs together hold everyone."""
    with FakeNorthpass(school, api_key=API_KEY, max_limit=100, rate_limit=None, latency=0.05) as server:
        catalog = catalog_for(["people"], sync_mode="incremental")
        killed = kill_read_when(lambda messages: len([m for m in messages if m["type"] == "STATE"]) >= 3,
                                _config(server), catalog, runner=runner)
        assert killed.returncode != 0, "the sync was killed before it ended"
        assert 0 < len(killed.records("people")) < len(school.people)

        resumed = _sync(server, runner, state=_final_state(killed))

    ids = {r["id"] for r in killed.records("people")} | {r["id"] for r in resumed.records("people")}
    assert ids == set(school.people)
    cut = _final_state(killed)[0]["stream"]["stream_state"]["updated_at"]
    remaining = sum(1 for p in school.people.values() if p["attributes"]["updated_at"] >= cut)
    assert len(resumed.records("people")) <= remaining, "only what the killed sync had not checkpointed"
