"""The request budget the manifest gives the whole connector (api_budget), as the CDK builds it:
requests_per_second in any 1.03 s, and half of them (rounded up) in any 0.515 s."""

import time

import pytest
import requests
import yaml

from airbyte_cdk.sources.declarative.models.declarative_component_schema import HTTPAPIBudget
from airbyte_cdk.sources.declarative.parsers.model_to_component_factory import ModelToComponentFactory
from airbyte_cdk.sources.streams.call_rate import CallRateLimitHit

from unit_tests.harness import MANIFEST


def _budget(config):
    definition = yaml.safe_load(MANIFEST.read_text())["api_budget"]
    return ModelToComponentFactory().create_component(HTTPAPIBudget, definition, config)


def _admitted(budget, request, attempts):
    """How many of `attempts` requests in a row the budget lets through now."""
    for n in range(attempts):
        try:
            budget.acquire_call(request, block=False)
        except CallRateLimitHit:
            return n
    return attempts


@pytest.mark.parametrize("config, half, whole", [({}, 5, 10), ({"requests_per_second": 3}, 2, 3),
                                                 ({"requests_per_second": 1}, 1, 1), ({"requests_per_second": 25}, 13, 25)])
def test_requests_per_second_in_any_window_and_half_of_them_in_any_half_window(config, half, whole):
    budget = _budget(config)
    request = requests.Request("GET", "https://api.northpass.com/v2/people").prepare()

    assert _admitted(budget, request, whole + 1) == half
    time.sleep(0.53)  # the first half window is over; the whole window is not
    assert _admitted(budget, request, whole + 1) == whole - half
