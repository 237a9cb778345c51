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

import inspect
import logging
import os
import socket
from pathlib import Path

import msgpack

from ._security import Security

__all__ = ["Worker", "TaskFunction", "task"]

log = logging.getLogger("drover.worker")

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
POOLS = ("processes", "threads", "solo")


def _expected(required: int, most: int | None) -> str:
    """"expected 2 arguments", "expected 1 to 2 arguments", "expected at least 1 argument"."""
    if most is None:
        count = f"at least {required}"
    elif required == most:
        count = str(required)
    else:
        count = f"{required} to {most}"
    plural = "" if count in ("1", "at least 1") else "s"
    return f"expected {count} argument{plural}"


def _from_text(kind: type, text: str, index: int):
    """A string argument read as the int, float or bool its parameter is annotated with."""
    try:
        if kind is bool:
            if text in ("true", "false"):
                return text == "true"
            raise ValueError(text)
        if kind is int:
            try:
                return int(text)
            except ValueError:
                f = float(text)  # "1e6" and "1000.0", as the C++ tasks take them
                if not f.is_integer():
                    raise
                return int(f)
        return float(text)
    except (ValueError, OverflowError):
        wanted = {int: "an integer", float: "a number", bool: "a boolean"}[kind]
        shown = text if len(text) <= 64 else text[:64] + "..."
        raise ArgumentError(f'argument {index + 1}: expected {wanted}, got "{shown}"') from None


class ArgumentError(Exception):
    """Arguments that do not fit a task, or a result that cannot be sent: the outcome is `error`
    with this message alone."""


class TaskFunction:
    """A registered function with what its signature says of its arguments."""

    def __init__(self, name: str, fn):
        if not callable(fn):
            raise TypeError(f"task '{name}': {fn!r} is not callable")
        self.name = name
        self.fn = fn
        self.required, self.most, self.converters = self._inspect(fn)

    @staticmethod
    def _inspect(fn) -> tuple[int, int | None, dict[int, type]]:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return 0, None, {}  # a builtin without a signature: its own call checks
        try:
            hints = inspect.get_annotations(fn, eval_str=True) if inspect.isfunction(fn) else {}
        except Exception:  # an annotation that does not evaluate: no conversions
            hints = {}
        required, most, converters = 0, 0, {}
        for i, p in enumerate(sig.parameters.values()):
            if p.kind is p.VAR_POSITIONAL:
                return required, None, converters
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                continue
            most += 1
            if p.default is p.empty:
                required = most
            kind = hints.get(p.name, p.annotation)
            if kind in (int, float, bool) or kind in ("int", "float", "bool"):
                converters[i] = {"int": int, "float": float, "bool": bool}.get(kind, kind)
        return required, most, converters

    def arguments(self, args: bytes) -> list:
        """The call's arguments from msgpack bytes. Raises ArgumentError."""
        try:
            value = msgpack.unpackb(args, raw=False, strict_map_key=False, unicode_errors="surrogateescape") \
                if args else None
        except msgpack.ExtraData:
            raise ArgumentError("arguments have trailing bytes") from None
        except Exception as e:  # not msgpack, nested past the decoder's limit, an unhashable map key
            raise ArgumentError(f"arguments are not valid msgpack: {e}") from None
        items = value if isinstance(value, list) else [] if value is None else [value]
        if len(items) < self.required or (self.most is not None and len(items) > self.most):
            raise ArgumentError(f"{_expected(self.required, self.most)}, got {len(items)}")
        for i, kind in self.converters.items():
            if i < len(items) and isinstance(items[i], str):
                items[i] = _from_text(kind, items[i], i)
        return items

    def call(self, args: bytes) -> bytes:
        """Runs the function on msgpack `args`; returns its packed result. Raises ArgumentError
        for unusable arguments or result, and whatever the function raises."""
        result = self.fn(*self.arguments(args))
        try:
            return msgpack.packb(result, use_bin_type=True, unicode_errors="surrogateescape")
        except Exception as e:
            raise ArgumentError(f"result of type {type(result).__name__} cannot be packed as msgpack: {e}") from None


def describe_error(e: BaseException) -> str:
    """An exception as an outcome's error: "ExcType: message" (ArgumentError: the message alone)."""
    if isinstance(e, ArgumentError):
        return str(e)
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
