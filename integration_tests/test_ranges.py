"""A big list when Northpass is slow: walked as several ranges of updated_at at once, so the request
budget, not the round trip, sets the pace. Every record once, edges included, while data changes;
truthful checkpoints; one scan, not one per range, when the filter is ignored."""

import pytest

from integration_tests.connector import catalog_for, kill_read_when, run_connector
from integration_tests.fake_northpass import FakeNorthpass, School
from integration_tests.test_incremental_sync import Churn

API_KEY = "ranges-key-c0ffee"
PAGE_SIZE = 20  # 2,400 people: 120 pages, so ranges of 50 pages: three
LATENCY = 0.15  # a round trip longer than the budget's pace (10 a second): one chain would lag


@pytest.fixture
def school():
    return School.generate(people=2400, courses=2, enrollments=10, groups=1, learning_paths=1, categories=1,
                           seed=41, recent_share=0.7)


def _server(school, **switches):
    server = FakeNorthpass(school, api_key=API_KEY, max_limit=100, rate_limit=10, latency=LATENCY)
    for name, value in switches.items():
        setattr(server, name, value)
    return server


def _config(server):
    return {"api_key": API_KEY, "base_url": server.url, "page_size": PAGE_SIZE}


def _read(server, runner, state=None):
    run = run_connector("read", _config(server), catalog_for(["people"], sync_mode="incremental"), state=state, runner=runner)
    assert run.returncode == 0, run.output()[-3000:]
    return run


def _ranges_started(server):
    """How many ranges the walk began: requests by key that are a range's first (filter gteq, page 1)."""
    firsts = [r for r in server.requests if r.path == "/v2/people" and r.query.get("page") not in (None, "1")]
    return len(firsts)  # the probes, asked by page number


def test_every_person_exactly_once_across_range_edges(school, runner):
    with _server(school) as server:
        run = _read(server, runner)
        probes = _ranges_started(server)
        people = server.count("/v2/people")

    ids = [r["id"] for r in run.records("people")]
    assert sorted(ids) == sorted(school.people), "everyone, and no one twice at a range's edge"
    assert probes >= 2, "the list was split"
    # a walk by key re-reads one record per page; then a probe and at most one page more per range
    assert people <= 2400 / (PAGE_SIZE - 1) + 2 * probes + 4


def test_people_changing_during_a_ranged_sync_are_not_lost(school, runner):
    churn = Churn(school, seed=3)
    with _server(school) as server:
        before = set(school.people)
        server.on_request = churn
        first = _read(server, runner)
        server.on_request = None
        second = _read(server, runner, state=[{"type": "STREAM", "stream": first.states()[-1]["stream"]}])

    emitted = {r["id"] for r in first.records("people")}
    stood_still = (before - churn.touched) & set(school.people)
    assert stood_still <= emitted, "no one who stood still is skipped"
    changed = churn.touched & set(school.people)
    assert changed <= emitted | {r["id"] for r in second.records("people")}, "every change, by the next sync at the latest"


def test_a_killed_ranged_sync_resumes_from_its_truthful_state_and_loses_no_one(school, runner):
    with _server(school) as server:
        catalog = catalog_for(["people"], sync_mode="incremental")
        killed = kill_read_when(lambda messages: len([m for m in messages if m["type"] == "STATE"]) >= 4,
                                _config(server), catalog, runner=runner)
        assert killed.returncode != 0, "the sync was killed before it ended"
        states = [s for s in killed.states() if s["stream"]["stream_descriptor"]["name"] == "people"]
        cut = states[-1]["stream"]["stream_state"]["updated_at"]
        emitted = {r["id"] for r in killed.records("people")}
        with school.lock:
            before_cut = {i for i, p in school.people.items() if p["attributes"]["updated_at"] < cut}
        assert before_cut <= emitted, "the state never runs ahead of a record not emitted"
        resumed = _read(server, runner, state=[{"type": "STREAM", "stream": states[-1]["stream"]}])

    assert emitted | {r["id"] for r in resumed.records("people")} == set(school.people)


@pytest.mark.parametrize("switch", ["ignore_filters", "refuse_filters"])
def test_a_server_ignoring_the_filter_is_scanned_once_not_once_per_range(school, switch, runner):
    with _server(school, **{switch: True}) as server:
        run = _read(server, runner)
        pages = server.count("/v2/people", status=200)

    assert sorted({r["id"] for r in run.records("people")}) == sorted(school.people)
    assert len([w for w in run.logs("WARN") if "reading the whole list" in w]) == 1
    assert pages <= 2 * (2400 / PAGE_SIZE) + 10, "one scan, not one per range"
