"""The request budget the manifest gives the whole connector (api_budget), as the CDK builds it."""

import pytest

from airbyte_cdk.sources.declarative.models.declarative_component_schema import HTTPAPIBudget
from airbyte_cdk.sources.declarative.parsers.model_to_component_factory import ModelToComponentFactory

from source_northpass.run import load_manifest


def _rates(config):
    budget = ModelToComponentFactory().create_component(HTTPAPIBudget, load_manifest()["api_budget"], config)
    (policy,) = budget._policies
    return [(rate.limit, rate.interval) for rate in policy._bucket.rates]


@pytest.mark.parametrize(
    "config, rates",
    [
        ({}, [(5, 515), (10, 1030)]),  # at most 10 per 1.03 s, and 5 of them per half of it
        ({"requests_per_second": 10}, [(5, 515), (10, 1030)]),
        ({"requests_per_second": 3}, [(2, 515), (3, 1030)]),
        ({"requests_per_second": 1}, [(1, 515), (1, 1030)]),
        ({"requests_per_second": 25}, [(13, 515), (25, 1030)]),
    ],
)
def test_requests_per_second_in_any_window_and_half_of_them_in_any_half_window(config, rates):
    assert _rates(config) == rates
