"""What a second incremental sync of `people` costs after K changes (README figures).

    python scripts/incremental_cost.py --people 3000 --changes 0,10,100,1000
"""

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integration_tests.connector import catalog_for, run_connector  # noqa: E402
from integration_tests.fake_northpass import FakeNorthpass, School  # noqa: E402

API_KEY = "cost-key-0000"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--changes", default="0,10,100,1000")
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    print("| people | changed since last sync | requests to /v2/people | records emitted |")
    print("|---|---|---|---|")
    for changes in [int(k) for k in args.changes.split(",")]:
        school = School.generate(people=args.people, courses=1, enrollments=0, groups=1, learning_paths=1, categories=1, seed=3)
        with FakeNorthpass(school, api_key=API_KEY, rate_limit=None) as server:
            config = {"api_key": API_KEY, "base_url": server.url, "page_size": args.page_size, "requests_per_second": 1000}
            catalog = catalog_for(["people"], sync_mode="incremental")
            first = run_connector("read", config, catalog)
            state = [{"type": "STREAM", "stream": first.states()[-1]["stream"]}]
            for person_id in random.Random(changes).sample(sorted(school.people), changes):
                school.update_person(person_id)
            server.reset_log()
            second = run_connector("read", config, catalog, state=state)
            assert second.returncode == 0, second.output()[-2000:]
            print(f"| {args.people} | {changes} | {server.count('/v2/people')} | {len(second.records('people'))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
