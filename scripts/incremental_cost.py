"""What a second incremental sync costs after K changes (README figures): of `people` after K
people changed, or of `activity_events` after K new events.

    python scripts/incremental_cost.py --people 3000 --changes 0,10,100,1000
    python scripts/incremental_cost.py --stream activity_events --events 30000 --changes 0,10,100,1000
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
    parser.add_argument("--stream", choices=("people", "activity_events"), default="people")
    parser.add_argument("--events", type=int, default=0, help="events in the feed before the first sync")
    args = parser.parse_args()
    path = "/v2/people" if args.stream == "people" else "/v2/events"
    print(f"| people | events | changed since last sync | requests to {path} | records emitted |")
    print("|---|---|---|---|---|")
    for changes in [int(k) for k in args.changes.split(",")]:
        school = School.generate(people=args.people, courses=1, enrollments=0, groups=1, learning_paths=1, categories=1,
                                 events=args.events, seed=3)
        with FakeNorthpass(school, api_key=API_KEY, rate_limit=None) as server:
            config = {"api_key": API_KEY, "base_url": server.url, "page_size": args.page_size}  # 10 requests/second
            catalog = catalog_for([args.stream], sync_mode="incremental")
            first = run_connector("read", config, catalog)
            state = [{"type": "STREAM", "stream": first.states()[-1]["stream"]}]
            if args.stream == "people":
                for person_id in random.Random(changes).sample(sorted(school.people), changes):
                    school.update_person(person_id)
            else:
                school.add_events(changes)  # a second each, after the feed's newest
            server.reset_log()
            second = run_connector("read", config, catalog, state=state)
            assert second.returncode == 0, second.output()[-2000:]
            print(f"| {args.people} | {len(school.events)} | {changes} | {server.count(path)} | {len(second.records(args.stream))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
