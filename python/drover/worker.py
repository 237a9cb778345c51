"""drover.Worker: run Python functions as drover tasks.

    worker = drover.Worker(broker="tcp://127.0.0.1:5556")

    @worker.task("sum_random")
    def sum_random(n: int) -> int:
        return sum(random.randint(1, 100) for _ in range(n))

    worker.run(pool="processes", concurrency=4)

A task's arguments arrive as msgpack: an array gives one argument per item,
any other value is the one argument, and no arguments (or nil) calls the
function with none. A parameter annotated `int`, `float` or `bool` reads a
string argument from its text ("42", "1e6", "true"), as a shell's words
arrive from `drover-producer map`. The return value is packed with msgpack
(None, bool, int, float, str, bytes, lists, tuples, dicts); an exception
ends the task `error` with "ExcType: message".

Pools: `processes` (the default) runs each slot in a child process forked
after the tasks are registered, so Python code runs on every core; a child
that dies is replaced and its task runs again. `threads` runs the slots as
threads of one process (I/O-bound tasks: the GIL lets one run Python at a
time); `solo` runs one slot.

Timeouts: a task past its `timeout_ms` runs again (RETRY) while it has
attempts left, else ends `timeout`, at its deadline. A processes child then
says BYE and exits, and its supervisor starts a new one at once: the task is
really stopped. A thread cannot be stopped from outside (an asynchronous
exception could land in the task's `finally` or with a lock held, and does
not reach code blocked in C), so in `threads` and `solo` the function runs
on, its slot stays busy until it returns, and its late result is dropped;
use `processes` for tasks that may hang.

Each worker process talks to the broker from its own I/O thread while the
tasks run on executor threads, so heartbeats go on during a task; a task
that holds the GIL in C code for longer than the liveness window (3 s by
default) silences them, and the broker runs its tasks elsewhere.

What the C++ worker does and this one does not, being choices rather than
duties of the protocol: early credits ahead of a long task's end, giving
queued tasks back (RETURN), and running quick tasks on the I/O thread.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from ._security import Security
from ._task_function import ArgumentError, TaskFunction, describe_error  # noqa: F401 (the package's names)

__all__ = ["Worker", "TaskFunction", "task"]

log = logging.getLogger("drover.worker")

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
POOLS = ("processes", "threads", "solo")


class Worker:
    """Tasks to run and how to reach the broker; run() serves until stopped.

    broker: the broker's backend endpoint. security: None, a Security, or a
    fleet directory (drover-keygen --fleet) whose worker keys to use.
    heartbeat: seconds between heartbeats; liveness: heartbeats missed
    before the broker is taken for gone (and connected to again). id: the
    worker id shown in STATUS and outcomes (default HOST:PID; a processes
    pool's children are ID:PID). prefetch: credits beyond the free slots
    (default: automatic, about 2 ms of queued work a slot).
    """

    def __init__(self, broker: str = "tcp://127.0.0.1:5556", security: Security | str | os.PathLike | None = None,
                 heartbeat: float = 1.0, liveness: int = 3, id: str | None = None, host: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, prefetch: int | None = None):
        if heartbeat <= 0 or liveness < 1:
            raise ValueError("heartbeat must be > 0 and liveness >= 1")
        if max_message_bytes < 64 * 1024:
            raise ValueError("max_message_bytes must be at least 65536")
        if isinstance(security, (str, os.PathLike)):
            security = Security.from_fleet(Path(security), "worker")
        self.broker = broker
        self.security = security
        self.heartbeat = float(heartbeat)
        self.liveness = int(liveness)
        self.id = id
        self.host = host or socket.gethostname()
        self.max_message_bytes = int(max_message_bytes)
        self.prefetch = prefetch
        self.tasks: dict[str, TaskFunction] = {}
        self._stop = None  # the running pool's _Stop, while run() runs

    def add(self, name: str, fn) -> "Worker":
        """Registers `fn` as task `name` (replacing an earlier one). Returns self."""
        if not isinstance(name, str) or not name:
            raise ValueError("a task name is a non-empty string")
        self.tasks[name] = TaskFunction(name, fn)
        return self

    def task(self, name=None):
        """Decorator: @worker.task, @worker.task() or @worker.task("name") (default: the function's name)."""
        if callable(name):
            self.add(name.__name__, name)
            return name

        def register(fn):
            self.add(name or fn.__name__, fn)
            return fn

        return register

    def run(self, pool: str = "processes", concurrency: int | None = None) -> int:
        """Serves tasks until SIGTERM/SIGINT (run from the main thread) or stop(). At the
        first request it takes no more tasks, finishes those it holds and says BYE; at a
        second it stops at once. Returns an exit status: 0 after a graceful stop, 130
        after one at once."""
        from . import _supervisor, _worker_loop

        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
        if not self.tasks:
            raise ValueError("no tasks registered: add some with @worker.task or worker.add")
        slots = 1 if pool == "solo" else int(concurrency or os.cpu_count() or 1)
        if slots < 1:
            raise ValueError("concurrency must be at least 1")
        stop = _worker_loop.Stop()
        self._stop = stop
        try:
            if pool == "processes":
                return _supervisor.Supervisor(self, slots, stop).run()
            worker_id = self.id or f"{self.host}:{os.getpid()}"
            runner = _worker_loop.Runner(self, worker_id, pool, slots, stop)
            return runner.run()
        finally:
            self._stop = None
            stop.close()

    def stop(self, at_once: bool = False) -> None:
        """Asks a running run() to stop (any thread): gracefully, or at once."""
        s = self._stop
        if s is not None:
            s.request()
            if at_once:
                s.request()


TASK_MARK = "__drover_task__"


def task(name=None):
    """Marks a module-level function as a task, for `python -m drover worker MODULE` to
    register when MODULE defines no Worker: @drover.task, @drover.task() or
    @drover.task("name") (default: the function's name). The function is unchanged."""
    if callable(name):
        setattr(name, TASK_MARK, name.__name__)
        return name

    def mark(fn):
        setattr(fn, TASK_MARK, name or fn.__name__)
        return fn

    return mark
