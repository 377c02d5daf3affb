import pytest

from integration_tests.connector import RUNNERS


@pytest.fixture(params=RUNNERS)
def runner(request):
    """Each end-to-end scenario runs under `python main.py` and under Airbyte's manifest runner
    (`source-declarative-manifest`, the manifest and components injected into the config)."""
    return request.param
