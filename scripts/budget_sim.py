"""How a sync's requests fall into the connector's request budget: a millisecond-step simulation.

The budget lets `limit` requests start in any moving window of `window` seconds, and `half` of
them in any half window (the manifest's two rates; `--half 0`: one window alone). A sync of the
benchmark's school is `chain` key-paged pages (`people`: each request waits for the one before
it) walked by `chains` walks side by side, one `courses` page, then `lists` enrollment lists
that become ready when the courses page has arrived; every request takes `rtt` seconds, and
`workers` threads run the walks and the lists. A key walk waiting for a slot gets it first (as
`_KeyWalksFirst` in components.py does). It prints when the last response arrives and when the
key walks finished: what the benchmark measures as sync time, without the machine's noise, to
see what a change of schedule would buy before building it.

    python scripts/budget_sim.py                       # the benchmark: 31 pages, 40 lists, 0.09 s
    python scripts/budget_sim.py --rtt 0.13            # a slower server
    python scripts/budget_sim.py --rtt 0.13 --chains 2 # two key walks side by side
"""

import argparse
from collections import deque


def simulate(chain: int, chains: int, lists: int, rtt: float, workers: int, limit: int, window: float,
             half: int = 0):
    step_ms, rtt_ms, window_ms = 1, round(rtt * 1000), round(window * 1000)
    starts: deque = deque()  # start times (ms) inside the moving window
    left = [chain // chains + (1 if i < chain % chains else 0) for i in range(chains)]
    walk_ready = [0] * chains
    list_workers = [0] * (workers - chains)  # when each free-for-lists worker is next idle
    queue = deque([0])  # ready times of list requests: the courses page first
    lists_released, courses_back, end, walks_done, t = False, None, 0, 0, 0
    while any(left) or queue or not lists_released:
        while starts and starts[0] <= t - window_ms:
            starts.popleft()
        free = limit - len(starts)
        if half:
            free = min(free, half - sum(1 for start in starts if start > t - window_ms // 2))
        if not lists_released and courses_back is not None and t >= courses_back:
            lists_released = True
            queue.extend([t] * lists)
        for i in range(chains):
            if free and left[i] and walk_ready[i] <= t:
                starts.append(t)
                free -= 1
                left[i] -= 1
                walk_ready[i] = t + rtt_ms
                end = max(end, t + rtt_ms)
                walks_done = max(walks_done, t + rtt_ms)
        for k, idle_at in enumerate(list_workers):
            if free and queue and queue[0] <= t and idle_at <= t:
                queue.popleft()
                starts.append(t)
                free -= 1
                list_workers[k] = t + rtt_ms
                end = max(end, t + rtt_ms)
                if courses_back is None:
                    courses_back = t + rtt_ms
        t += step_ms
    return end / 1000, walks_done / 1000, chain + lists + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", type=int, default=31, help="key-paged pages in all (people)")
    parser.add_argument("--chains", type=int, default=1, help="key walks side by side")
    parser.add_argument("--lists", type=int, default=40, help="enrollment lists of one page")
    parser.add_argument("--rtt", type=float, default=0.09, help="seconds a request takes")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.03)
    parser.add_argument("--half", type=int, default=5, help="requests in any half window (0: no such rate)")
    args = parser.parse_args()
    if not 1 <= args.chains < args.workers:
        parser.error("--chains must leave at least one worker for the lists")
    end, walks_done, requests = simulate(args.chain, args.chains, args.lists, args.rtt, args.workers, args.limit, args.window,
                                           args.half)
    print(f"{requests} requests: last response at {end:.2f} s, key walks done at {walks_done:.2f} s")


if __name__ == "__main__":
    main()
