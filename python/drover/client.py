"""drover.Client: submit tasks to a drover broker and collect their outcomes.

    with drover.Client("tcp://127.0.0.1:5555") as client:
        f = client.submit("sum_random", 1000000)        # a concurrent.futures.Future
        print(f.result())
        for value in client.map("echo", range(10)):    # results in input order
            print(value)

A Client owns one background I/O thread with two sockets: a DEALER to the
broker's frontend (SUBMIT, SETTLE, CANCEL, HEARTBEAT) and the PULL sink it
binds, where workers push outcomes. Callers on any thread hand it tasks
through a queue; it sends them in batches, checks each outcome's token,
drops forged and duplicate outcomes, settles the rest, sends heartbeats,
resends unfinished tasks when the broker restarts or goes silent, and holds
back tasks the broker refuses with queue_full (docs/protocol.md).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import os
import socket as _socket
import threading
import time
import weakref
from _thread import RLock as _RLock
from _thread import allocate_lock as _allocate_lock
from typing import Any, Iterable, Iterator

import msgpack
import zmq

from . import _wire
from ._client_io import DEFAULT_OPTS, E_NAME, E_SLOT, E_TARGET, ClientIO
from ._security import Security
from ._wire import Command


DEFAULT_BROKER = "tcp://127.0.0.1:5555"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

as_completed = concurrent.futures.as_completed
wait = concurrent.futures.wait


# Errors ------------------------------------------------------------------


class TaskError(Exception):
    """A task that did not end `ok`: `status` says how, `error` why (the
    worker's exception text, or the broker's reason); `attempt` is the
    attempt that ended it, `worker` the worker (or "broker") that said so."""

    status = ""

    def __init__(self, id: str, task: str, error: str, attempt: int = 0, worker: str = ""):
        super().__init__(f"task {task} ({id}) {self.status}: {error}")
        self.id, self.task, self.error, self.attempt, self.worker = id, task, error, attempt, worker

    def __reduce__(self):
        return type(self), (self.id, self.task, self.error, self.attempt, self.worker)


class TaskFailed(TaskError):
    """The task raised (status `error`), or no worker runs its name."""

    status = "error"


class TaskTimeout(TaskError):
    """The task ran past its timeout on its last attempt."""

    status = "timeout"


class TaskLost(TaskError):
    """Its workers died `max_attempts` times."""

    status = "lost"


class TaskCancelled(TaskError):
    """Cancelled: by cancel(), by close(), or by the broker."""

    status = "cancelled"


class TaskRejected(TaskError):
    """The broker refused the task (`error` is its reason: queue_full, invalid: ..., duplicate_id)."""

    status = "rejected"


_ERRORS = {c.status: c for c in (TaskFailed, TaskTimeout, TaskLost, TaskCancelled, TaskRejected)}


class BrokerUnavailable(ConnectionError):
    """No broker answered at the client's address within connect_timeout (or a status() timeout)."""


class ClientClosed(RuntimeError):
    """The client is closed (or closing): it takes no more tasks."""


# Futures and map runs ----------------------------------------------------


class _FutureCondition(_RLock):
    """threading.Condition's methods that concurrent.futures.Future uses, on
    itself, a reentrant lock (Future's repr takes it again inside
    set_result), its waiter list made on the first wait: one object, where a
    threading.Condition, built in Python with a deque and bound methods, is
    most of a Future's cost and of the garbage collector's work."""

    __slots__ = ("_waiters",)

    def __init__(self):
        self._waiters = None

    def wait(self, timeout: float | None = None) -> bool:
        waiter = _allocate_lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        saved = self._release_save()
        got = False
        try:
            if timeout is None:
                got = waiter.acquire()
            else:
                got = waiter.acquire(True, timeout) if timeout > 0 else waiter.acquire(False)
            return got
        finally:
            self._acquire_restore(saved)
            if not got:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def notify(self, n: int = 1) -> None:
        waiters = self._waiters
        while waiters and n > 0:
            waiters.pop(0).release()
            n -= 1

    def notify_all(self) -> None:
        waiters = self._waiters
        if waiters:
            for w in waiters:
                w.release()
            waiters.clear()


# Future.__init__ as this module knows it; a Python whose Future holds more
# (or other) state gets Future.__init__ itself.
_FUTURE_FIELDS = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}
_FAST_FUTURE = set(vars(concurrent.futures.Future())) == _FUTURE_FIELDS
_PENDING, _RUNNING, _FINISHED = (concurrent.futures._base.PENDING, concurrent.futures._base.RUNNING,
                                  concurrent.futures._base.FINISHED)


class TaskFuture(concurrent.futures.Future):
    """A task's Future. `id` is the task's id; once it is done, `attempt`
    is the run that ended it (1 for the first), `worker` the worker that ran
    it ("broker" for an outcome the broker made, "" for one made here) and
    `elapsed` its run time in seconds. cancel() also asks the broker to drop
    the task if it is still queued (a running task runs on, and its result
    is dropped)."""

    attempt = 0
    worker = ""
    elapsed = 0.0

    def __init__(self, client: "Client"):
        if _FAST_FUTURE:
            self._condition = _FutureCondition()
            self._state = _PENDING
            self._result = self._exception = None
            self._waiters = []
            self._done_callbacks = ()  # a list once a callback comes (add_done_callback)
        else:  # pragma: no cover
            super().__init__()
        self._client = client
        self.id = ""

    def _finish(self, ok: bool, value) -> None:
        """set_result(value) if ok, else set_exception(value); nothing if the caller cancelled it
        (Future.set_result's work, without raising for that case)."""
        if not _FAST_FUTURE:  # pragma: no cover
            try:
                self.set_result(value) if ok else self.set_exception(value)
            except concurrent.futures.InvalidStateError:
                pass
            return
        with self._condition:
            if self._state is not _PENDING and self._state is not _RUNNING:
                return  # its caller cancelled it
            if ok:
                self._result = value
            else:
                self._exception = value
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_result(self) if ok else waiter.add_exception(self)
            if self._condition._waiters:
                self._condition.notify_all()
        if self._done_callbacks:
            self._invoke_callbacks()

    def add_done_callback(self, fn) -> None:
        with self._condition:
            if self._done_callbacks == ():
                self._done_callbacks = []
        super().add_done_callback(fn)

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._client._request_cancel(self.id)
        return True


def _result_value(o: dict) -> Any:
    """The decoded result of an ok outcome. Raises on bytes that are not one msgpack value."""
    r = o.get("result", b"")
    if not r:
        return None
    if type(r) is str:
        r = r.encode("utf-8", "surrogateescape")
    return msgpack.unpackb(r, raw=False, strict_map_key=False, unicode_errors="surrogateescape")


def _task_error(o: dict, worker: str, name: str, tid: str) -> TaskError:
    status = o.get("status", "error")
    error = o.get("error", "")
    return _ERRORS.get(status, TaskFailed)(tid, o.get("task") or name, error if type(error) is str else repr(error),
                                           o.get("attempt", 0), worker)


def _outcome_value(o: dict, worker: str, name: str, tid: str) -> tuple[bool, Any]:
    """(True, value) for an ok outcome, (False, TaskError) otherwise."""
    if o["status"] != "ok":
        return False, _task_error(o, worker, name, tid)
    try:
        return True, _result_value(o)
    except Exception as e:  # bytes that are not msgpack: the task's fault, as the C++ client reports it
        return False, TaskFailed(tid, o.get("task") or name, f"undecodable result: {e}", o.get("attempt", 0), worker)


class _MapRun:
    """The outcomes of one map() call by slot; the I/O thread puts, the
    iterating thread takes in order."""

    __slots__ = ("done", "cond", "waiting", "head")

    def __init__(self):
        self.done: dict[int, tuple] = {}
        self.cond = threading.Condition(threading.Lock())
        self.waiting = False
        self.head = 0

    def put(self, slot: int, outcome: dict, worker: str, name: str, tid: str) -> None:
        self.done[slot] = (outcome, worker, name, tid)
        if self.waiting and slot == self.head:
            with self.cond:
                self.cond.notify()

    def take(self, slot: int, alive) -> tuple:
        """The outcome of `slot`, waiting for it; raises ClientClosed if alive() turns false first."""
        got = self.done.pop(slot, None)
        if got is not None:
            return got
        with self.cond:
            self.head = slot
            self.waiting = True
            try:
                while slot not in self.done:
                    if not self.cond.wait(1.0) and not alive():
                        raise ClientClosed("the client's I/O thread ended")
            finally:
                self.waiting = False
        return self.done.pop(slot)


# Addresses ---------------------------------------------------------------


def local_address_towards(endpoint: str) -> str:
    """This host's IPv4 address on the route to a tcp endpoint's host (127.0.0.1 if unknown)."""
    if not endpoint.startswith("tcp://"):
        return "127.0.0.1"
    host, _, port = endpoint[6:].rpartition(":")
    if not host or host.startswith("["):
        return "127.0.0.1"
    try:
        addr = _socket.getaddrinfo(host, port or 1, _socket.AF_INET, _socket.SOCK_DGRAM)[0][4]
        with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as s:
            s.connect(addr)  # a UDP connect sends nothing: it only asks the kernel for a route
            return s.getsockname()[0]
    except (OSError, IndexError, ValueError):
        return "127.0.0.1"


def _default_sink(broker: str) -> str:
    if broker.startswith("ipc://"):
        return f"ipc:///tmp/drover-sink-{os.getpid()}-{os.urandom(4).hex()}"
    return f"tcp://{local_address_towards(broker)}:*"


def _reply_to(bound: str, broker: str, advertise: str | None) -> str:
    """The endpoint workers are told to push to: `advertise` (an endpoint, or a
    host for the bound port), else the bound endpoint, a wildcard host made
    the address towards the broker."""
    if not bound.startswith("tcp://"):
        return advertise or bound
    host, _, port = bound[6:].rpartition(":")
    if advertise:
        return advertise if "://" in advertise else f"tcp://{advertise}:{port}"
    if host in ("0.0.0.0", "*", "[::]", "::"):
        host = local_address_towards(broker)
    return f"tcp://{host}:{port}"


def _random_route() -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
    return "".join(alphabet[b & 63] for b in os.urandom(8))


_open_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def _close_open_clients() -> None:
    for c in list(_open_clients):
        c.close(wait=False, cancel=True)


_tls = threading.local()
_sleep = time.sleep
_YIELD_MASK = 255  # a caller submitting without pause hands the GIL over every 256 tasks (see _add)


def _packer():
    p = getattr(_tls, "pack", None)
    if p is None:
        p = _tls.pack = msgpack.Packer(use_bin_type=True).pack
    return p


def _check_utf8(text: str, what: str) -> None:
    """Raises ValueError if `text` is not valid UTF-8 text (a lone surrogate): the wire's strings are
    UTF-8, and a task the I/O thread could not encode would never be sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {text[:64]!r} is not valid UTF-8: {e.reason} at {e.start}") from None


def _check_name(name) -> None:
    """Raises ValueError unless `name` is a non-empty str that encodes as UTF-8."""
    if type(name) is not str or not name:
        raise ValueError("a task name is a non-empty str")
    _check_utf8(name, "task name")


def _security_of(security) -> Security | None:
    if security is None or isinstance(security, Security):
        return security
    return Security.from_fleet(security, "producer")


class Client(ClientIO):
    """A producer: submits tasks to a drover broker and collects their outcomes.

    broker: the broker's frontend ("tcp://HOST:PORT" or "ipc://PATH").
    security: None (plain), a Security, or a fleet directory (drover-keygen --fleet DIR).
    sink_bind: where the sink binds (default: tcp on an ephemeral port of the
      address that routes to the broker); advertise: the endpoint (or host)
      workers are told to push outcomes to, if not the bound one.
    heartbeat, liveness: seconds between heartbeats, and the missed ones
      after which the broker is taken for gone (the client reconnects and
      resends every unfinished task).
    connect_timeout: seconds the constructor waits for the broker's first
      answer before it raises BrokerUnavailable; None or 0: it does not wait,
      and a silent broker is only logged (tasks wait for it).
    window: unfinished tasks (and outcomes not yet settled) before submit() blocks.
    max_attempts, timeout, retry_on_error: defaults of every task.
    queue_full_wait: seconds tasks refused with queue_full are held back and
      sent again, while the broker takes none, before they end TaskRejected.
    """

    def __init__(self, broker: str = DEFAULT_BROKER, security: Security | str | os.PathLike | None = None, *,
                 sink_bind: str | None = None, advertise: str | None = None, heartbeat: float = 1.0,
                 liveness: int = 3, connect_timeout: float | None = 10.0, window: int = 20000,
                 max_attempts: int = _wire.DEFAULT_MAX_ATTEMPTS, timeout: float | None = None,
                 retry_on_error: bool = False, queue_full_wait: float = 30.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        if not (broker.startswith("tcp://") or broker.startswith("ipc://")):
            raise ValueError(f"broker {broker!r}: expected tcp://HOST:PORT or ipc://PATH")
        if heartbeat <= 0 or liveness < 1 or window < 1:
            raise ValueError("heartbeat must be > 0, liveness and window >= 1")
        self._broker_endpoint = broker
        self._security = _security_of(security)
        self._window = int(window)
        self._closed = False
        self._pid = os.getpid()  # a forked child has no I/O thread: its submits are refused
        self._broken = ""
        self._sink_key = os.urandom(_wire.SECRET_BYTES)
        self._route = _random_route().encode()
        self._prefix = os.urandom(6).hex() + "."
        self._seq = itertools.count(1)
        self._room = threading.Condition(threading.Lock())
        self._heard = threading.Event()
        self._default_opts = DEFAULT_OPTS
        self._default_opts = self._opts(timeout, max_attempts, retry_on_error)
        self._init_io(heartbeat, liveness, queue_full_wait, max_message_bytes)
        self._ctx = zmq.Context(io_threads=1)
        try:
            self._bind_sink(sink_bind or _default_sink(broker), advertise)
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._connect_broker()
        except BaseException:
            self._ctx.destroy(linger=0)
            raise
        self._send(Command.HEARTBEAT)  # the broker's answer says it is there
        self._thread = threading.Thread(target=self._io_main, name="drover-client-io", daemon=True)
        self._thread.start()
        _open_clients.add(self)
        if connect_timeout and not self._heard.wait(connect_timeout):
            self.close(wait=False, cancel=True)
            raise BrokerUnavailable(
                f"no broker answered at {broker} in {connect_timeout:g} s (is it running there, and reachable? "
                f"with security, does this client have the fleet's keys, and is its key on the broker's "
                f"allow-list?)")

    def _bind_sink(self, bind: str, advertise: str | None) -> None:
        self._zap = None
        if self._security is not None:
            self._zap = self._ctx.socket(zmq.REP)  # answered by the I/O thread (_answer_zap)
            self._zap.linger = 0
            self._zap.bind("inproc://zeromq.zap.01")
        s = self._sink = self._ctx.socket(zmq.PULL)
        s.linger = 0
        s.rcvhwm = 100000
        s.maxmsgsize = self._max_message_bytes
        if self._security is not None:
            self._security.server(s)
        try:
            s.bind(bind)
        except zmq.ZMQError as e:
            raise OSError(f"cannot bind the sink at {bind}: {e} (give another sink_bind=)") from None
        bound = s.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sink_ipc_path = bound[6:] if bound.startswith("ipc://") else ""
        reply_to = _reply_to(bound, self._broker_endpoint, advertise)
        if self._security is not None:
            reply_to += "?curve=" + self._security.public
        self._reply_to = reply_to

    # --- tasks ----------------------------------------------------------------

    def _opts(self, timeout, max_attempts, retry_on_error) -> tuple:
        """(max_attempts, timeout_ms, retry_on_error) of a task, the client's defaults filled in."""
        if timeout is None and max_attempts is None and retry_on_error is None:
            return self._default_opts
        d_attempts, d_timeout_ms, d_retry = self._default_opts
        if max_attempts is None:
            max_attempts = d_attempts
        elif type(max_attempts) is not int or not 1 <= max_attempts <= 0xFFFFFFFF:
            raise ValueError(f"max_attempts must be an integer >= 1, not {max_attempts!r}")
        timeout_ms = d_timeout_ms
        if timeout is not None:
            seconds = float(timeout)
            if not 0.001 <= seconds < 0xFFFFFFFF / 1000:  # NaN fails this too
                raise ValueError(f"timeout must be at least 0.001 s (and under 49 days), not {timeout!r}")
            timeout_ms = max(1, int(round(seconds * 1000)))
        retry = d_retry if retry_on_error is None else bool(retry_on_error)
        opts = (max_attempts, timeout_ms, retry)
        return DEFAULT_OPTS if opts == DEFAULT_OPTS else opts

    def _add(self, name: str, args: bytes, opts: tuple, target, slot: int, tid: str | None) -> str:
        """Queues one task for the I/O thread; blocks while the window is full. Returns its id.
        Raises ClientClosed, ValueError (a caller's id still unfinished, arguments too large)."""
        if self._closed or self._broken:
            raise ClientClosed(self._broken or "the client is closed")
        if os.getpid() != self._pid:
            raise ClientClosed("this Client belongs to the process that made it: its I/O thread does not exist "
                               "in a forked child; make a new Client there")
        pending = self._pending
        if len(pending) + len(self._settle) >= self._window:
            self._wait_room()
        if len(args) + len(name) > self._max_message_bytes - 1024:
            raise ValueError(f"task '{name}' arguments too large: {len(args)} bytes, where at most "
                             f"{max(0, self._max_message_bytes - 1024 - len(name))} fit (max_message_bytes "
                             f"{self._max_message_bytes}, less 1024 for the message's own fields and the name)")
        seq = next(self._seq)
        named = tid is not None
        if named:
            if type(tid) is not str or not tid:
                raise TypeError("a task id is a non-empty str")
            _check_utf8(tid, "task id")
            if tid in pending:
                raise ValueError(f"duplicate id '{tid}': a task with this id is still unfinished")
        else:
            tid = f"{self._prefix}{seq:x}"
        pending[tid] = [tid, seq, name, args, opts, target, slot, None, None, -1, False, named]
        self._inbox.append(tid)
        if self._asleep:
            self._wake()
        elif not seq & _YIELD_MASK:
            _sleep(0)  # hands the GIL to the I/O thread if it waits for it (a busy caller would keep it 5 ms)
        return tid

    def _wait_room(self) -> None:
        if threading.current_thread() is self._thread:
            return  # a done-callback submitting: the I/O thread cannot wait for itself
        with self._room:
            self._room_waiters += 1
            try:
                while len(self._pending) + len(self._settle) >= self._window:
                    if self._closed:
                        raise ClientClosed(self._broken or "the client is closed")
                    if not self._room.wait(1.0) and not self._thread.is_alive():
                        raise ClientClosed("the client's I/O thread ended")
            finally:
                self._room_waiters -= 1

    def submit(self, name: str, *args, timeout: float | None = None, max_attempts: int | None = None,
               retry_on_error: bool | None = None, id: str | None = None) -> TaskFuture:
        """Submits task `name` with positional `args` (each one parameter, msgpack-encoded). Returns a
        Future whose result() is the task's result, or raises a TaskError subclass (TaskFailed,
        TaskTimeout, TaskLost, TaskCancelled, TaskRejected). timeout: seconds a run may take;
        max_attempts: runs after crashes and timeouts (and errors with retry_on_error); id: the task's
        id on the wire (default: the client's own, unique). Blocks while the window is full."""
        _check_name(name)
        opts = self._opts(timeout, max_attempts, retry_on_error)
        f = TaskFuture(self)
        f.id = self._add(name, _packer()(args), opts, f, -1, id)
        return f

    def map(self, name: str, iterable: Iterable, *, timeout: float | None = None, max_attempts: int | None = None,
            retry_on_error: bool | None = None, window: int | None = None) -> Iterator:
        """Runs `name` once per item of `iterable` (the item its only argument) and yields the results in
        input order; raises the first failure in that order (a TaskError), as Pool.map does, and cancels
        the tasks still out. At most `window` tasks (default: the client's window) are unfinished at a
        time, so an endless iterable is consumed as results are."""
        return self._map(name, iterable, self._opts(timeout, max_attempts, retry_on_error), window, False)

    def starmap(self, name: str, iterable: Iterable, *, timeout: float | None = None,
                max_attempts: int | None = None, retry_on_error: bool | None = None,
                window: int | None = None) -> Iterator:
        """map() with each item the task's argument list (as Pool.starmap)."""
        return self._map(name, iterable, self._opts(timeout, max_attempts, retry_on_error), window, True)

    def _map(self, name: str, iterable: Iterable, opts: tuple, window: int | None, star: bool) -> Iterator:
        _check_name(name)
        pack = msgpack.Packer(use_bin_type=True).pack
        packed = (pack(tuple(item)) for item in iterable) if star else (b"\x91" + pack(item) for item in iterable)
        return self._map_values(self._ordered(name, packed, opts, window))

    @staticmethod
    def _map_values(outcomes: Iterator) -> Iterator:
        try:
            for o, worker, name, tid in outcomes:
                ok, value = _outcome_value(o, worker, name, tid)
                if not ok:
                    raise value
                yield value
        finally:
            outcomes.close()  # cancels the tasks still out

    def _ordered(self, name: str, packed: Iterator[bytes], opts: tuple, window: int | None) -> Iterator[tuple]:
        """Runs `name` once per argument list in `packed` (msgpack bytes), at most `window` unfinished at a
        time, and yields each raw outcome (outcome, worker, task name, id) in input order. Closing the
        generator cancels the tasks still out."""
        window = max(1, min(window or self._window, self._window))
        run = _MapRun()
        add, alive = self._add, self._thread.is_alive
        sent = head = 0
        try:
            for args in packed:
                add(name, args, opts, run, sent, None)
                sent += 1
                while sent - head >= window:
                    yield run.take(head, alive)
                    head += 1
            while head < sent:
                yield run.take(head, alive)
                head += 1
        finally:
            if head < sent and not self._closed:
                self._request_cancel(run)  # the tasks still out

    def _deliver(self, e: list, o: dict, worker: str, tid: str) -> None:
        """Hands an outcome to its Future or map run (I/O thread)."""
        slot = e[E_SLOT]
        if slot >= 0:
            e[E_TARGET].put(slot, o, worker, e[E_NAME], tid)
            return
        f = e[E_TARGET]
        ok, value = _outcome_value(o, worker, e[E_NAME], tid)
        f.attempt, f.worker = o.get("attempt", 0), worker
        elapsed = o.get("elapsed_us", 0)
        if type(elapsed) is int:
            f.elapsed = elapsed / 1e6
        f._finish(ok, value)

    # --- cancelling, waiting, closing ----------------------------------------

    def _request_cancel(self, what) -> None:
        if self._thread.is_alive() and not self._stopping:
            self._cancels.append(what)
            self._wake()

    def cancel(self, futures: Iterable[concurrent.futures.Future] | None = None) -> None:
        """Cancels these futures (default: every unfinished task): queued tasks are dropped by the broker;
        running ones run on, their results dropped."""
        if futures is None:
            self._request_cancel(None)
            return
        for f in futures:
            f.cancel()

    def wait_all(self, timeout: float | None = None) -> bool:
        """Waits until every submitted task has its outcome (at most `timeout` seconds). Returns whether
        they all have."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("wait_all() in a done-callback would wait for ever: callbacks run on the I/O thread")
        end = None if timeout is None else time.monotonic() + timeout
        with self._room:
            self._room_waiters += 1
            try:
                while self._pending and self._thread.is_alive():
                    left = 1.0 if end is None else min(1.0, end - time.monotonic())
                    if left <= 0:
                        return False
                    self._room.wait(left)
            finally:
                self._room_waiters -= 1
        return not self._pending

    def close(self, wait: bool = True, *, cancel: bool = False, timeout: float | None = None) -> None:
        """Stops the client: with `wait` (and not `cancel`), first waits (at most `timeout` seconds) for
        the unfinished tasks. Those still unfinished then end TaskCancelled ("client closed"), and the
        broker is told to drop them (CANCEL), with the last SETTLE and a BYE; the I/O thread ends.
        submit() raises ClientClosed from the start. From a done-callback (the I/O thread), it cannot
        wait for tasks whose outcomes that thread delivers: it closes as with cancel=True."""
        on_io_thread = threading.current_thread() is self._thread
        self._closed = True
        if not self._thread.is_alive():
            return
        if wait and not cancel and not on_io_thread:
            self.wait_all(timeout)
        self._stopping = True
        try:
            self._wake()
        except OSError:
            pass  # the thread ended and closed its eventfd
        if threading.current_thread() is not self._thread:
            self._thread.join()
        _open_clients.discard(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Waits for the unfinished tasks, or, when the block raised, cancels them."""
        self.close(wait=exc_type is None, cancel=exc_type is not None)

    # --- the broker's state ----------------------------------------------------

    def status(self, timeout: float = 5.0) -> dict:
        """The broker's STATUS_REPLY (queues, workers, totals) as a dict. Raises BrokerUnavailable if no
        answer comes in `timeout` seconds. Any thread."""
        s = self._ctx.socket(zmq.DEALER)
        try:
            s.linger = 0
            if self._security is not None:
                self._security.client(s)
            s.connect(self._broker_endpoint)
            s.send_multipart([_wire.header(Command.STATUS), b""])
            end = time.monotonic() + timeout
            while (left := end - time.monotonic()) > 0:
                if not s.poll(int(left * 1000) + 1, zmq.POLLIN):
                    break
                frames = s.recv_multipart()
                if len(frames) == 2 and frames[0] == _wire.header(Command.STATUS_REPLY):
                    return msgpack.unpackb(frames[1], raw=False, strict_map_key=False,
                                           unicode_errors="surrogateescape")
        finally:
            s.close(linger=0)
        raise BrokerUnavailable(f"no STATUS answer from a broker at {self._broker_endpoint} in {timeout:g} s")

    def wait_for_workers(self, n: int, timeout: float = 30.0) -> bool:
        """Waits until the broker reports at least `n` workers; False after `timeout` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if len(self.status(min(1.0, max(0.01, end - time.monotonic()))).get("workers", ())) >= n:
                    return True
            except BrokerUnavailable:
                pass
            time.sleep(0.02)
        return False

    # --- what the client knows ----------------------------------------------------

    @property
    def reply_to(self) -> str:
        """The sink endpoint workers push to (with ?curve=KEY under security)."""
        return self._reply_to

    @property
    def broker(self) -> str:
        return self._broker_endpoint

    @property
    def unfinished(self) -> int:
        """Tasks submitted whose outcome has not come."""
        return len(self._pending)

    def connected(self) -> bool:
        """Whether the broker has answered this client yet."""
        return self._heard.is_set()

    def stats(self) -> dict:
        """Counters: submitted (SUBMITted, resends included), finished, duplicates, forged, dropped_sink,
        resent, resubmitted, reconnects, queue_full, rejected, ...; and unfinished."""
        d = dict(self.counters)
        d["unfinished"] = len(self._pending)
        return d

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<drover.Client {state} broker={self._broker_endpoint} unfinished={len(self._pending)}>"
