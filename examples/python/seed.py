#!/usr/bin/env python3
"""The seed, in Python: one CPU-bound task run 8 times, four ways.

    python3 examples/python/seed.py [--tasks 8] [--n 1000000] [--processes 2]

1. a plain loop;
2. 8 threading.Threads: the GIL lets one thread run Python at a time, so no speed-up;
3. multiprocessing.Pool(2): a process a core, past the GIL;
4. drover: a drover-broker (from $DROVER_BIN, else PATH) and a Python worker with a
   processes pool of 2 (`python -m drover worker` on this very file), the tasks
   submitted with drover.Client.

It prints each way's results and a table of wall times and speed-ups over the loop.
The broker and worker are started (and their children forked) before the clock starts,
as a service runs before its work comes; the Pool's start is inside its time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

try:
    import drover
except ImportError:  # run from a checkout: the package is in python/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import drover

N = 1_000_000


def compute(n: int = N) -> int:
    """The seed's task: the sum of n random integers from 1 to 100."""
    return sum(random.randint(1, 100) for _ in range(n))


# `python -m drover worker seed.py` runs this Worker.
worker = drover.Worker()
worker.add("compute", compute)


def plain(tasks: int, n: int) -> list[int]:
    return [compute(n) for _ in range(tasks)]


def with_threads(tasks: int, n: int) -> list[int]:
    results = [0] * tasks

    def run(i: int) -> None:
        results[i] = compute(n)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(tasks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def with_pool(tasks: int, n: int, processes: int) -> list[int]:
    with Pool(processes) as pool:
        return pool.map(compute, [n] * tasks, chunksize=1)


def program(name: str) -> str:
    """A drover program from $DROVER_BIN, else PATH."""
    candidates = [Path(os.environ["DROVER_BIN"]) / name] if os.environ.get("DROVER_BIN") else []
    on_path = shutil.which(name)
    candidates += [Path(on_path)] if on_path else []
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    sys.exit(f"seed.py: {name} not found: set DROVER_BIN to the directory of the drover programs, or put them on PATH")


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    sys.exit(f"seed.py: timed out waiting for {what}")


class Fleet:
    """A broker on ephemeral ports and a Python worker pool running this file's tasks."""

    def __init__(self, processes: int):
        self.dir = tempfile.TemporaryDirectory(prefix="drover-seed-")
        endpoints = Path(self.dir.name) / "endpoints.json"
        self.broker = subprocess.Popen([program("drover-broker"), "--frontend", "tcp://127.0.0.1:*", "--backend",
                                        "tcp://127.0.0.1:*", "--endpoints-file", str(endpoints), "--log-level",
                                        "error"])
        ep = wait_for(lambda: endpoints.exists() and endpoints.stat().st_size and json.loads(endpoints.read_text()),
                      10, "the broker's endpoints")
        self.frontend, backend = ep["frontend"], ep["backend"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(drover.__file__).parents[1]),
                                                           os.environ.get("PYTHONPATH", "")]))
        self.worker = subprocess.Popen([sys.executable, "-m", "drover", "worker", str(Path(__file__).resolve()),
                                        "--broker", backend, "--pool", "processes", "-c", str(processes),
                                        "--log-level", "warn"], env=env)
        wait_for(lambda: len(self.status().get("workers", [])) == processes, 20, "the worker's children")

    def status(self) -> dict:
        r = subprocess.run([program("drover-broker"), "status", "--broker", self.frontend], capture_output=True,
                           text=True)
        return json.loads(r.stdout) if r.returncode == 0 else {}

    def close(self) -> None:
        for p in (self.worker, self.broker):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.dir.cleanup()


def with_drover(fleet: Fleet, tasks: int, n: int) -> list[int]:
    with drover.Client(broker=fleet.frontend) as client:
        return list(client.map("compute", [n] * tasks))


def timed(fn, *args):
    start = time.perf_counter()
    results = fn(*args)
    return results, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description="The seed task run four ways: loop, threads, Pool, drover.")
    p.add_argument("--tasks", type=int, default=8, help="tasks (default 8)")
    p.add_argument("--n", type=int, default=N, help="random integers summed by a task (default 1,000,000)")
    p.add_argument("--processes", type=int, default=2, help="Pool processes and drover children (default 2)")
    args = p.parse_args()
    rows = []
    for name, fn, extra in (("plain loop", plain, ()), (f"{args.tasks} threading.Threads", with_threads, ()),
                            (f"multiprocessing.Pool({args.processes})", with_pool, (args.processes,))):
        results, wall = timed(fn, args.tasks, args.n, *extra)
        print(f"{name}: {results}")
        rows.append((name, wall))
    fleet = Fleet(args.processes)
    try:
        results, wall = timed(with_drover, fleet, args.tasks, args.n)
    finally:
        fleet.close()
    name = f"drover, processes pool of {args.processes}"
    print(f"{name}: {results}")
    rows.append((name, wall))
    print(f"\n{'':32} {'wall s':>8} {'speed-up':>9}")
    for name, wall in rows:
        print(f"{name:32} {wall:8.2f} {rows[0][1] / wall:9.2f}")


if __name__ == "__main__":
    main()
