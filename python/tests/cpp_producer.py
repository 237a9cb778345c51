"""drover-producer (C++) as the client of the Python worker tests: task JSON lines in, outcomes out."""

from __future__ import annotations

import json
import subprocess

from harness import Fleet, program


def producer_argv(fleet: Fleet, *args: str, workers: int = 1) -> list[str]:
    return [program("drover-producer"), "--broker", fleet.frontend, "--heartbeat-ms", str(fleet.heartbeat_ms),
            "--wait-workers", str(workers), "--wait-timeout-ms", "20000", *fleet.security_args(), *args]


def submit(fleet: Fleet, tasks: list[dict], workers: int = 1, timeout: float = 40) -> dict[str, dict]:
    """Submits `tasks` (each with an "id") and returns their outcomes by id."""
    lines = "".join(json.dumps(t) + "\n" for t in tasks)
    r = subprocess.run(producer_argv(fleet, "submit", workers=workers), input=lines, capture_output=True,
                       text=True, timeout=timeout)
    outcomes = {str(o["id"]): o for o in map(json.loads, r.stdout.splitlines())}
    if len(outcomes) != len(tasks):
        raise AssertionError(f"drover-producer gave {len(outcomes)} outcomes for {len(tasks)} tasks "
                             f"(exit {r.returncode}): {r.stdout!r} {r.stderr[-2000:]!r}")
    return outcomes


def start_submit(fleet: Fleet, tasks: list[dict], workers: int = 1) -> subprocess.Popen:
    """The same, in the background: finish with finish_submit()."""
    p = subprocess.Popen(producer_argv(fleet, "submit", workers=workers), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    p.stdin.write("".join(json.dumps(t) + "\n" for t in tasks))
    p.stdin.close()
    p.stdin = None  # communicate() then only reads
    return p


def finish_submit(p: subprocess.Popen, timeout: float = 40) -> dict[str, dict]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"drover-producer did not finish: {out!r} {err[-2000:]!r}")
    return {str(o["id"]): o for o in map(json.loads, out.splitlines())}


def broker_status(fleet: Fleet) -> dict:
    r = subprocess.run([program("drover-broker"), "status", "--broker", fleet.frontend, *fleet.security_args()],
                       capture_output=True, text=True, timeout=10)
    return json.loads(r.stdout) if r.returncode == 0 else {}
