import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from source_northpass import components  # noqa: E402

# The name the manifest gives its classes, under which Airbyte's manifest runner registers the
# components file (main.py does the same).
sys.modules["source_declarative_manifest.components"] = components
