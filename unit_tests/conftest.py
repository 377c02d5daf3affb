import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from source_northpass import components  # noqa: E402

# The name the manifest gives its classes, under which Airbyte's manifest runner registers the
# components file (main.py does the same).
sys.modules["source_declarative_manifest.components"] = components

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_sync():
    """Each test is one sync: what a sync learns (path spellings, warnings given) starts afresh."""
    components.SYNC = components._ThisSync()
    yield
