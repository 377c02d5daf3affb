"""The components file skips the interpreter's last garbage collection at exit (gc.freeze)."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "with":
        import source_northpass.components
    class Garbage:
        def __del__(self):
            print("collected at exit")
    cycle = Garbage()
    cycle.itself = cycle
    del cycle
    """
)


def _exit_output(components: str) -> str:
    run = subprocess.run([sys.executable, "-c", PROGRAM, components], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_importing_the_components_skips_the_last_collection_at_exit():
    assert _exit_output("without") == "collected at exit\n"  # what the interpreter does by itself
    assert _exit_output("with") == ""
