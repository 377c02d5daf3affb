"""_KeyWalksFirst alone, on the CDK's own request budget: a key walk waiting for a slot gets it
before the other requests waiting at that moment, and they all get theirs."""

import threading
import time
from datetime import timedelta

import requests

from airbyte_cdk.sources.streams.call_rate import HttpAPIBudget, MovingWindowCallRatePolicy, Rate

from source_northpass.components import _KeyWalksFirst
from source_northpass.run import create_source
from unit_tests.northpass_builders import config

SLOT = 0.2  # the budget below: one request per SLOT seconds
REQUEST = requests.Request("GET", "http://127.0.0.1/v2/people").prepare()


def _retriever(stream):
    return stream._stream_partition_generator._partition_factory._retriever


def _budget_with_key_walks_first():
    budget = HttpAPIBudget(
        policies=[MovingWindowCallRatePolicy(rates=[Rate(limit=1, interval=timedelta(seconds=SLOT))], matchers=[])]
    )
    gate = _KeyWalksFirst()
    gate.install(budget)
    return budget, gate


def test_a_waiting_key_walk_gets_the_next_slot_before_requests_that_waited_longer():
    # Without the gate every waiter wakes when the slot frees and the first awake takes it: the
    # key walk, which started waiting last, would come first about one round in three.
    for _ in range(3):
        budget, gate = _budget_with_key_walks_first()
        budget.acquire_call(REQUEST)  # the slot is taken for SLOT seconds
        order = []

        def page_numbered(name):
            budget.acquire_call(REQUEST)
            order.append(name)

        def key_walk():
            gate.key_walk(lambda: budget.acquire_call(REQUEST))
            order.append("key walk")

        threads = [threading.Thread(target=page_numbered, args=(f"list {i}",)) for i in (1, 2)]
        for thread in threads:
            thread.start()
        time.sleep(SLOT / 4)
        threads.append(threading.Thread(target=key_walk))
        threads[-1].start()
        for thread in threads:
            thread.join(10)
        assert order[0] == "key walk", order
        assert sorted(order) == ["key walk", "list 1", "list 2"]  # each one got its slot


def test_without_a_key_walk_waiting_a_request_waits_only_for_the_budget():
    budget, _ = _budget_with_key_walks_first()
    budget.acquire_call(REQUEST)
    started = time.monotonic()
    budget.acquire_call(REQUEST)
    assert SLOT * 0.9 <= time.monotonic() - started < SLOT + 0.1


def test_the_budget_is_wrapped_once():
    budget, gate = _budget_with_key_walks_first()
    wrapped = budget.acquire_call
    gate.install(budget)
    _KeyWalksFirst().install(budget)
    assert budget.acquire_call is wrapped


def test_every_stream_of_a_source_shares_the_one_budget_and_it_puts_key_walks_first():
    streams = create_source(config=config()).streams(config())
    budgets = {id(_retriever(s).requester.api_budget) for s in streams}
    budget = _retriever(streams[0]).requester.api_budget
    assert len(streams) == 11 and len(budgets) == 1
    assert getattr(budget, "_northpass_key_walks_first", False)
