"""Tasks for the Python worker tests (python -m drover worker worker_tasks)."""

import os
import random
import time

import drover

worker = drover.Worker()
_calls: dict[str, int] = {}


@worker.task
def add(a: int, b: int) -> int:
    return a + b


@worker.task
def echo(*args):
    return args[0] if len(args) == 1 else list(args)


@worker.task
def fail(message: str = "fail() was called"):
    raise RuntimeError(message)


@worker.task
def sleep_ms(ms: int) -> int:
    time.sleep(ms / 1000)
    return ms


@worker.task
def unpackable():
    return {1, 2}  # a set: msgpack has no such type


@worker.task
def fail_times(key: str, n: int) -> int:
    """Raises on the first n calls for `key` in this process, then returns the call count."""
    _calls[key] = _calls.get(key, 0) + 1
    if _calls[key] <= n:
        raise RuntimeError(f"fail_times: call {_calls[key]} of {n}")
    return _calls[key]


@worker.task
def mark_and_sleep(path: str, ms: int) -> int:
    """Appends this process's pid to `path`, then sleeps: a test finds (and kills) the runner."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(ms / 1000)
    return os.getpid()


@worker.task
def crash():
    os._exit(3)


@worker.task
def pid() -> int:
    return os.getpid()


@worker.task
def compute(n: int = 1_000_000) -> int:
    return sum(random.randint(1, 100) for _ in range(n))


@worker.task
def fork_and_sleep(path: str, seconds: int) -> int:
    """Forks a child that writes its pid to `path` and sleeps `seconds`; returns at once. For the test
    that a pool kills what a task left in its child's process group."""
    child = os.fork()
    if child == 0:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(seconds)
        os._exit(0)
    return child
