"""The Python client's speed: no-op tasks from one Python producer to C++ workers, next to
multiprocessing.Pool(2).map(f, xs, chunksize=1) over the same tasks in the same run.

    python3 python/bench/bench_client.py [--tasks 200000] [--reps 3] [--smoke]

Starts a drover-broker and one `drover-worker --pool threads -c 2` from $DROVER_BIN (default
build/bin), prints a table (tasks, seconds, tasks/s, ratio to the Pool baseline) and exits 0
whatever the figures: it reports, it does not judge. Each figure is the median of --reps runs;
each run of each row is timed from its first task to its last result.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

import drover  # noqa: E402
import harness  # noqa: E402


def noop(x):
    """The Pool baseline's task: its argument back, as drover's `echo`."""
    return x


def pool_map(xs: list) -> float:
    with multiprocessing.Pool(2) as pool:
        pool.map(noop, xs[:100], chunksize=1)  # the children are up before the clock starts
        start = time.perf_counter()
        out = pool.map(noop, xs, chunksize=1)
        seconds = time.perf_counter() - start
    assert out == xs
    return seconds


def drover_map(client: drover.Client, task: str, xs: list) -> float:
    start = time.perf_counter()
    out = list(client.map(task, xs))
    seconds = time.perf_counter() - start
    assert task != "echo" or out == xs
    return seconds


def drover_submit(client: drover.Client, task: str, xs: list) -> float:
    start = time.perf_counter()
    futures = [client.submit(task, x) for x in xs]
    out = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    assert task != "echo" or out == xs
    return seconds


def median_of(reps: int, fn, *args) -> tuple[float, float, float]:
    runs = [fn(*args) for _ in range(reps)]
    return statistics.median(runs), min(runs), max(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="2,000 tasks, one repetition: that every figure comes")
    args = ap.parse_args(argv)
    if args.smoke:
        args.tasks, args.reps = 2000, 1
    xs = list(range(args.tasks))
    rows = [("Pool(2).map chunksize=1", *median_of(args.reps, pool_map, xs))]
    with harness.Fleet(heartbeat_ms=1000) as fleet:
        fleet.cpp_worker(pool="threads", concurrency=2)
        with drover.Client(fleet.frontend) as client:
            client.wait_for_workers(1, 10)
            list(client.map("echo", xs[: max(100, args.tasks // 10)]))  # warm-up: every connection up
            rows.append(("drover map echo", *median_of(args.reps, drover_map, client, "echo", xs)))
            rows.append(("drover map sum_random(0)", *median_of(args.reps, drover_map, client, "sum_random",
                                                                [0] * args.tasks)))
            rows.append(("drover submit+result echo", *median_of(args.reps, drover_submit, client, "echo", xs)))
            stats = client.stats()
    base = rows[0][1]
    print(f"python client bench: {args.tasks} no-op tasks, median of {args.reps}; C++ broker and one "
          f"drover-worker --pool threads -c 2 over tcp; {os.cpu_count()} CPUs")
    print(f"{'what':<28}{'tasks':>9}{'seconds':>9}{'min':>8}{'max':>8}{'tasks/s':>10}{'vs Pool':>9}")
    for name, med, lo, hi in rows:
        print(f"{name:<28}{args.tasks:>9}{med:>9.3f}{lo:>8.3f}{hi:>8.3f}{args.tasks / med:>10,.0f}{base / med:>9.2f}")
    print(f"targets: >= 50,000 tasks/s and >= 3.00 x Pool (map echo); client counters: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
