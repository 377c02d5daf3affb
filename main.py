import sys

from source_northpass.fast_start import collector_paused
from source_northpass.prefetch import PREFETCH

PREFETCH.start(sys.argv[1:])  # a read's first pages are asked for while the CDK imports (prefetch.py)

with collector_paused():  # start-up builds objects that live until exit (see fast_start.py)
    from source_northpass.run import run

if __name__ == "__main__":
    run()
