"""_SharedFetches alone: identical requests in flight share one response; nothing is kept after."""

import threading
import time
from types import SimpleNamespace

import pytest

from source_northpass.components import _SharedFetches


class _Fetch:
    """A fetch that counts its calls and, when told to, stays in flight until released."""

    def __init__(self, error=None, hold=False):
        self.result, self.error = SimpleNamespace(content=b'{"data": []}'), error
        self.calls = 0
        self.in_flight = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self):
        self.calls += 1
        self.in_flight.set()
        self.release.wait(5)
        if self.error is not None:
            raise self.error
        return self.result


def _in_thread(shared, key, fetch, results):
    def read():
        try:
            results.append(shared.get(key, fetch))
        except Exception as error:  # noqa: BLE001 - the test looks at what each reader got
            results.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def _second_reader_joins(shared, fetch, key_of_second):
    """A first reader fetches ("a",); while it is in flight a second reader asks for key_of_second."""
    first, second = [], []
    leader = _in_thread(shared, ("a",), fetch, first)
    assert fetch.in_flight.wait(5)
    follower = _in_thread(shared, key_of_second, fetch, second)
    time.sleep(0.2)  # the second reader is now waiting on, or fetching, its page
    fetch.release.set()
    leader.join(5)
    follower.join(5)
    return first, second


def test_a_page_asked_for_while_in_flight_is_fetched_once_and_given_to_both_readers():
    shared, fetch = _SharedFetches(), _Fetch(hold=True)
    first, second = _second_reader_joins(shared, fetch, ("a",))
    assert fetch.calls == 1
    assert first == second == [fetch.result]


def test_a_different_page_in_flight_is_fetched_on_its_own():
    shared, fetch = _SharedFetches(), _Fetch(hold=True)
    _second_reader_joins(shared, fetch, ("b",))
    assert fetch.calls == 2


def test_a_page_asked_for_after_it_arrived_is_fetched_again():
    shared, fetch = _SharedFetches(), _Fetch()
    assert shared.get(("a",), fetch) is fetch.result
    assert shared.get(("a",), fetch) is fetch.result
    assert fetch.calls == 2, "nothing is kept once the response has arrived: the data may have changed"


@pytest.mark.parametrize("error", [ConnectionError("reset by peer"), RuntimeError("HTTP 500 after retries")])
def test_a_failed_fetch_fails_every_reader_waiting_for_it_and_is_not_remembered(error):
    shared, fetch = _SharedFetches(), _Fetch(error=error, hold=True)
    first, second = _second_reader_joins(shared, fetch, ("a",))
    assert first == second == [error]
    assert fetch.calls == 1

    retry = _Fetch()
    assert shared.get(("a",), retry) is retry.result, "a later reader asks Northpass again"
    assert retry.calls == 1
