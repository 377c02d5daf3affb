"""source_northpass/prefetch.py: which requests go before the CDK is imported, that the CDK's budget
counts them when they went, and that the CDK gets their answers only for the very same request."""

import json
import threading
import time
from datetime import timedelta

import pytest
import requests

from airbyte_cdk.sources.streams.call_rate import CallRateLimitHit, HttpAPIBudget, MovingWindowCallRatePolicy, Rate

from integration_tests.fake_northpass import FakeNorthpass, School
from source_northpass import prefetch
from source_northpass.prefetch import Prefetch, plan

KEY = "prefetch-test-key"
BASE = "https://api.northpass.com/v2"


def _catalog(*streams, mode="full_refresh"):
    return {
        "streams": [
            {
                "stream": {"name": s, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
                "sync_mode": mode,
                "destination_sync_mode": "append",
            }
            for s in streams
        ]
    }


def _argv(tmp_path, config, catalog, state=None, command="read"):
    paths = {}
    for name, content in (("config", config), ("catalog", catalog), ("state", state)):
        if content is not None:
            paths[name] = tmp_path / f"{name}.json"
            paths[name].write_text(json.dumps(content))
    argv = [command, "--config", str(paths["config"]), "--catalog", str(paths["catalog"])]
    return argv + (["--state", str(paths["state"])] if state is not None else [])


def _state(stream, updated_at):
    return {"type": "STREAM", "stream": {"stream_descriptor": {"name": stream}, "stream_state": {"updated_at": updated_at}}}


def test_a_full_read_asks_for_each_list_first_page_and_a_child_list_parent_first_page(tmp_path):
    planned = plan(_argv(tmp_path, {"api_key": KEY}, _catalog("people", "courses", "course_enrollments")))

    first = [f"{BASE}/people?limit=100&page=1&sort=updated_at", f"{BASE}/courses?limit=100&page=1&sort=updated_at"]
    assert planned.first == first
    assert list(planned.children) == [first[1]]
    assert [child("c-1") for child in planned.children[first[1]]] == [f"{BASE}/courses/c-1/enrollments?limit=100&page=1"]
    assert planned.headers == {"Accept": "application/json", "X-Api-Key": KEY}
    assert planned.rates == [(5, 515), (10, 1030)]


def test_lower_bounds_are_the_later_of_state_when_incremental_and_start_date(tmp_path):
    config = {"api_key": KEY, "start_date": "2024-01-31", "page_size": 250, "requests_per_second": 3}
    catalog = _catalog("people", "courses", "groups", mode="incremental")
    catalog["streams"][2]["sync_mode"] = "full_refresh"
    state = [_state("people", "2024-05-01T10:00:00Z"), _state("courses", "2023-12-01T00:00:00Z")]
    planned = plan(_argv(tmp_path, config, catalog, state=state))  # courses: start_date is later

    assert planned.first == [
        f"{BASE}/people?limit=250&page=1&sort=updated_at&filter%5Bupdated_at%5D%5Bgteq%5D=2024-05-01T10%3A00%3A00Z",
        f"{BASE}/courses?limit=250&page=1&sort=updated_at&filter%5Bupdated_at%5D%5Bgteq%5D=2024-01-31T00%3A00%3A00Z",
        f"{BASE}/groups?limit=250&page=1&sort=updated_at&filter%5Bupdated_at%5D%5Bgteq%5D=2024-01-31T00%3A00%3A00Z",
    ]
    assert planned.rates == [(2, 515), (3, 1030)]


def test_a_start_at_the_epoch_is_no_filter_at_all(tmp_path):
    planned = plan(_argv(tmp_path, {"api_key": KEY, "start_date": "1970-01-01T00:00:00Z"}, _catalog("people")))
    assert planned.first == [f"{BASE}/people?limit=100&page=1&sort=updated_at"]


def test_children_follow_their_paginator_and_incremental_children_are_left_to_the_cdk(tmp_path):
    catalog = _catalog("course_properties", "group_memberships", "person_course_progresses")
    planned = plan(_argv(tmp_path, {"api_key": KEY}, catalog))

    courses = f"{BASE}/courses?limit=100&page=1&sort=updated_at"
    groups = f"{BASE}/groups?limit=100&page=1&sort=updated_at"
    assert planned.first == [courses, groups]  # person_course_progresses: none (incremental parent)
    assert [c("c-1") for c in planned.children[courses]] == [f"{BASE}/properties/courses/c-1"]  # NoPagination
    assert [c("g-1") for c in planned.children[groups]] == [f"{BASE}/groups/g-1/people?limit=100&page=1"]


@pytest.mark.parametrize(
    "config",
    [
        {"api_key": KEY, "base_url": "http://api.example.com"},  # the key would travel in clear text
        {"api_key": KEY, "base_url": "https://user:pw@api.northpass.com"},
        {"api_key": KEY, "base_url": "ftp://api.northpass.com"},
        {"api_key": ""},
        {"base_url": "https://api.northpass.com"},
        {"api_key": KEY, "requests_per_second": 0},
        {"api_key": KEY, "num_workers": 0},  # the spec's minimum is 2
        {"api_key": KEY, "page_size": "abc"},
        {"api_key": KEY, "start_date": "31/01/2024"},
    ],
)
def test_nothing_is_planned_for_a_config_the_connector_would_refuse(tmp_path, config):
    try:
        planned = plan(_argv(tmp_path, config, _catalog("people")))
    except ValueError:  # what Prefetch._run does with it: nothing
        planned = None
    assert planned is None


def test_plain_http_only_to_this_machine(tmp_path):
    for base in ("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"):
        planned = plan(_argv(tmp_path, {"api_key": KEY, "base_url": base}, _catalog("people")))
        assert planned.first == [f"{base}/v2/people?limit=100&page=1&sort=updated_at"]


def test_only_a_read_starts_and_never_through_a_proxy(tmp_path, monkeypatch):
    argv = _argv(tmp_path, {"api_key": KEY, "base_url": "http://127.0.0.1:9"}, _catalog("people"))
    assert Prefetch().start(["check", *argv[1:]]) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert Prefetch().start(argv) is None


def test_waits_count_as_the_cdk_budget_counts():
    rates = [(5, 515), (10, 1030)]
    now = 10_000
    assert prefetch._wait_ms([], 0, rates, now) == 0
    assert prefetch._wait_ms([now - 100] * 4, 0, rates, now) == 0
    assert prefetch._wait_ms([now - 100] * 5, 0, rates, now) == 416  # the half window frees at +515
    assert prefetch._wait_ms([now - 100] * 4, 1, rates, now) == 50  # one on its way: wait for its time
    assert prefetch._wait_ms([now - 900] * 5 + [now - 300] * 5, 0, rates, now) == 216  # both bind: the later
    assert prefetch._wait_ms([now - 900] * 5 + [now - 600] * 5, 0, rates, now) == 131  # 10 per 1.03 s


# -- against a server ---------------------------------------------------------------------------
@pytest.fixture
def server():
    school = School.generate(people=30, courses=3, enrollments=12, groups=1, learning_paths=1, categories=1, seed=5)
    with FakeNorthpass(school, api_key=KEY, rate_limit=None) as running:
        yield running


def _started(tmp_path, server, *streams, api_key=KEY):
    early = Prefetch()
    argv = _argv(tmp_path, {"api_key": api_key, "base_url": server.url}, _catalog(*streams))
    thread = early.start(argv)
    thread.join(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(e.answer.done() for e in early._early.values()):
        time.sleep(0.01)
    return early


def _budget():
    return HttpAPIBudget(
        policies=[
            MovingWindowCallRatePolicy(
                rates=[Rate(limit=5, interval=timedelta(seconds=0.515)), Rate(limit=10, interval=timedelta(seconds=1.03))],
                matchers=[],
            )
        ]
    )


def _get(url, api_key=KEY):
    return requests.Request("GET", url, headers={"X-Api-Key": api_key, "Accept": "application/json"}).prepare()


def test_the_budget_counts_early_requests_when_they_went(tmp_path, server):
    early = _started(tmp_path, server, "people", "courses", "course_enrollments")
    assert server.count() == 5  # people, courses, then the 3 courses' enrollments: the half window
    budget = _budget()
    before = time.time() * 1000
    early.close(budget, _get(server.url + "/v2/people"))

    (policy,) = budget._policies
    stamps = [item.timestamp for item in policy._bucket.items]
    assert len(stamps) == 5 and all(stamp <= before for stamp in stamps)
    with pytest.raises(CallRateLimitHit):
        budget.acquire_call(_get(server.url + "/v2/people"), block=False)  # 5 in this half window


def test_a_budget_it_cannot_tell_the_past_counts_them_as_sent_now(tmp_path, server):
    early = _started(tmp_path, server, "people")

    class Budget:
        _policies = []
        calls = []

        def acquire_call(self, request, block=True, timeout=None):
            self.calls.append(request)

    budget, request = Budget(), _get(server.url + "/v2/people")
    early.close(budget, request)
    assert budget.calls == [request]


def test_nothing_goes_early_once_the_cdk_sends(tmp_path, server):
    early = Prefetch()
    early.close(_budget(), _get(server.url + "/v2/people"))
    thread = early.start(_argv(tmp_path, {"api_key": KEY, "base_url": server.url}, _catalog("people", "courses")))
    thread.join(10)
    time.sleep(0.2)
    assert server.count() == 0


def test_the_same_request_gets_the_early_answer_and_another_does_not(tmp_path, server, monkeypatch):
    early = _started(tmp_path, server, "people")
    early.close(_budget(), _get(server.url + "/v2/people"))
    asked = server.count()
    direct = requests.get(server.url + "/v2/people?limit=100&page=1&sort=updated_at", headers={"X-Api-Key": KEY})

    other_key = _get(server.url + "/v2/people?sort=updated_at&page=1&limit=100", api_key="another-key")
    assert early.take(other_key) is None
    assert early.take(_get(server.url + "/v2/people?sort=updated_at&page=2&limit=100")) is None
    same = _get(server.url + "/v2/people?sort=updated_at&page=1&limit=100")  # same query, other order
    response = early.take(same)
    assert response.status_code == 200 and response.json() == direct.json()
    assert response.request is same and response.url == same.url
    assert early.take(_get(same.url)).json() == direct.json()  # shared with a reader asking at once
    monkeypatch.setattr(prefetch, "SHARE_SECONDS", 0.05)
    time.sleep(0.1)
    assert early.take(_get(same.url)) is None  # later readers ask Northpass
    assert server.count() == asked + 1  # only the direct request above


def test_an_answer_that_is_not_a_200_is_left_to_the_cdk(tmp_path, server):
    early = _started(tmp_path, server, "people", api_key="a-wrong-key")
    assert [r.status for r in server.requests] == [401]
    early.close(_budget(), _get(server.url + "/v2/people", api_key="a-wrong-key"))
    assert early.take(_get(server.url + "/v2/people?limit=100&page=1&sort=updated_at", api_key="a-wrong-key")) is None


def test_an_unreachable_server_is_left_to_the_cdk(tmp_path):
    class Nowhere:
        url = "http://127.0.0.1:9"  # discard port: nothing listens

    early = _started(tmp_path, Nowhere, "people")
    budget = _budget()
    early.close(budget, _get(Nowhere.url + "/v2/people"))
    assert budget._policies[0]._bucket.items == []  # nothing went, nothing counted
    assert early.take(_get(Nowhere.url + "/v2/people?limit=100&page=1&sort=updated_at")) is None


def test_a_high_rate_still_keeps_few_requests_in_flight_and_few_in_all(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "MAX_IN_FLIGHT", 2)
    monkeypatch.setattr(prefetch, "MAX_EARLY", 4)
    school = School.generate(people=30, courses=8, enrollments=16, groups=1, learning_paths=1, categories=1, seed=5)
    with FakeNorthpass(school, api_key=KEY, rate_limit=None, latency=0.05) as server:
        early = Prefetch()
        config = {"api_key": KEY, "base_url": server.url, "requests_per_second": 1000}
        early.start(_argv(tmp_path, config, _catalog("courses", "course_enrollments"))).join(10)
        time.sleep(0.2)
        assert server.count() == 4  # courses, then 3 of the 8 enrollment lists
        starts = sorted(r.t for r in server.requests)
        assert starts[3] - starts[1] >= 0.04  # the 4th waited for an answer: 2 at a time


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.northpass.com",
        "https://proxy.internal:8443/northpass/",
        "http://127.0.0.1:8080",
        "http://127.5.6.7",
        "http://localhost:1",
        "http://[::1]:9",
        "http://api.northpass.com",
        "http://10.0.0.1",
        "https://user:pw@api.northpass.com",
        "https://api.northpass.com?x=1",
        "https://api.northpass.com#top",
        "ftp://api.northpass.com",
        "https://",
    ],
)
def test_the_early_rule_for_base_urls_is_the_connectors(base_url):
    """prefetch.py cannot import components.py (it would import the CDK): its copy of the rule
    must answer as BaseUrlValidation does."""
    from source_northpass.components import BaseUrlValidation

    try:
        BaseUrlValidation().validate(base_url)
        accepted = True
    except Exception:
        accepted = False
    assert prefetch._safe_base(base_url.strip().rstrip("/") + "/v2") is accepted


def test_no_cdk_send_passes_before_the_budget_knows_what_went_early(tmp_path, server, monkeypatch):
    """The CDK starts several workers at once: a second one must not send (into a budget that
    does not yet hold the early requests) while the first is still telling it."""
    early = _started(tmp_path, server, "people", "courses", "course_enrollments")  # 5 early: a half window
    told = prefetch._record_sent

    def slowly(budget, stamps):
        time.sleep(0.3)
        return told(budget, stamps)

    monkeypatch.setattr(prefetch, "_record_sent", slowly)
    budget, request = _budget(), _get(server.url + "/v2/people")
    first = threading.Thread(target=early.close, args=(budget, request))
    first.start()
    time.sleep(0.05)
    early.close(budget, request)  # a second worker's send: waits for the first
    with pytest.raises(CallRateLimitHit):
        budget.acquire_call(request, block=False)
    first.join()


def test_the_environment_can_turn_early_requests_off(tmp_path, monkeypatch):
    argv = _argv(tmp_path, {"api_key": KEY, "base_url": "http://127.0.0.1:9"}, _catalog("people"))
    monkeypatch.setenv("NORTHPASS_EARLY_REQUESTS", "off")
    assert Prefetch().start(argv) is None
    monkeypatch.setenv("NORTHPASS_EARLY_REQUESTS", "on")
    thread = Prefetch().start(argv)
    assert thread is not None
    thread.join(10)


def test_an_answer_given_is_not_kept_once_its_sharing_second_is_over(tmp_path, server, monkeypatch):
    early = _started(tmp_path, server, "people", "courses")
    early.close(_budget(), _get(server.url + "/v2/people"))
    monkeypatch.setattr(prefetch, "SHARE_SECONDS", 0.05)
    assert early.take(_get(server.url + "/v2/people?limit=100&page=1&sort=updated_at")).status_code == 200
    assert len(early._early) == 2
    time.sleep(0.1)
    assert early.take(_get(server.url + "/v2/courses?limit=100&page=1&sort=updated_at")).status_code == 200
    assert len(early._early) == 1  # people's page was let go; courses' is shared for its second
