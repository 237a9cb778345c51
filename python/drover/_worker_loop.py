"""One worker process: its broker connection, credits, executors, sinks and deadlines.

Threads: the thread that calls Runner.run() is the I/O thread. It owns every
socket (the broker's DEALER, a PUSH socket per sink) and every structure
here unless a comment says otherwise. Executor threads take runs from a
queue, call the task's function and hand the run back through a deque,
waking the I/O thread through the Stop pipe (which signals and stop() also
write to). docs/protocol.md is the specification of the messages; the C++
worker (worker/src) is the reference for the behaviour.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field

import zmq

from . import _wire as w
from ._security import split_keyed_endpoint
from ._stall import StallMeter
from ._task_function import ArgumentError, describe_error

log = logging.getLogger("drover.worker")

EXIT_AT_ONCE = 130
EXIT_REPLACED = 75  # a processes child that left after a timeout: replace it at once
MAX_BACKOFF = 5.0  # seconds between reconnections to a silent broker, at most
MESSAGE_FIELDS = 1024  # bytes of a message kept for its own fields (the C++ k_message_fields)
BATCH_BYTES = 1 << 20  # a RESULT batch's payload, at most
DRAIN_BUDGET = 1024  # broker messages handled a turn
SINK_CAPACITY = 256  # PUSH sockets kept, the least recently used closed past it
QUEUED_WORK_NS = 2_000_000  # automatic prefetch: about this much queued work a slot
MAX_PREFETCH = 1000  # a slot
HELD_LIMIT = 100_000  # tasks a worker holds past its credits before it takes the broker for broken


class Stop:
    """Stop requests (signals, Worker.stop(), a supervisor) and the pipe that wakes the I/O
    thread. request() and wake() are safe from any thread and from signal handlers."""

    def __init__(self):
        self.requests = 0
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._saved: dict[int, object] = {}
        self._saved_wakeup = None
        self._term_seen = False

    @property
    def fd(self) -> int:
        return self._r

    def request(self) -> None:
        self.requests += 1
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._w, b"\0")
        except OSError:  # full: a wake-up is pending anyway; closed: stopping
            pass

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:
            pass

    def install(self, child: bool) -> bool:
        """Handles SIGTERM and SIGINT (and, in a processes child, SIGUSR2: stop at once). A
        child counts SIGTERM once: its supervisor and a service manager may both send it.
        Only from the main thread; returns whether installed."""
        if threading.current_thread() is not threading.main_thread():
            return False

        def on_term(signum, frame):
            if child and self._term_seen:
                return
            self._term_seen = True
            self.request()

        def on_now(signum, frame):
            self.requests = max(self.requests + 1, 2)
            self.wake()

        handlers = {signal.SIGTERM: on_term, signal.SIGINT: on_term}
        if child:
            handlers[signal.SIGUSR2] = on_now
        for sig, handler in handlers.items():
            self._saved[sig] = signal.signal(sig, handler)
        # The C-level handler writes here from whichever thread the signal hits, so a
        # poll in the main thread wakes even when an executor thread took the signal.
        self._saved_wakeup = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        return True

    def restore(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()
        if self._saved_wakeup is not None:
            signal.set_wakeup_fd(self._saved_wakeup)
            self._saved_wakeup = None

    def close(self) -> None:
        self.restore()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._r = self._w = -1


class Credits:
    """What the worker grants the broker: a credit a slot plus a prefetch (automatic: about
    QUEUED_WORK_NS of queued work a slot from the measured task times, none for tasks
    longer than that), in batches of half the prefetch; and a start credit for each free
    slot the broker holds none for. Socket-free; the I/O thread's."""

    def __init__(self, slots: int, prefetch: int | None = None):
        self.slots = slots
        self.auto = prefetch is None
        self.prefetch = 1 if prefetch is None else prefetch
        self.outstanding = 0  # tasks received and not done with (outcome sent, retried or dropped)
        self.promised = 0  # credits granted and not done with
        self.starts_out = 0  # start credits granted and not yet used by a DISPATCH
        self.ran = self.busy_ns = 0
        self._sampled_ran = self._sampled_busy = 0
        self.mean_ns = 0

    def add_runs(self, n: int, ns: int) -> None:
        self.ran += n
        self.busy_ns += ns

    def target(self) -> int:
        """Slots plus the prefetch."""
        if not self.auto:
            return self.slots + self.prefetch
        if self.ran - self._sampled_ran >= (16 if self.mean_ns else 4):
            self.mean_ns = max(1, (self.busy_ns - self._sampled_busy) // (self.ran - self._sampled_ran))
            self._sampled_ran, self._sampled_busy = self.ran, self.busy_ns
        if not self.mean_ns:
            return self.slots + self.prefetch
        wanted = QUEUED_WORK_NS * self.slots // self.mean_ns
        if wanted == 0:
            return self.slots  # long tasks: a slot's credit goes back when its task ends
        most = min(MAX_PREFETCH * self.slots, 4 * self.ran)  # a slow start: a few quick tasks say little
        return self.slots + max(min(wanted, most), self.prefetch)

    def top_up(self) -> tuple[int, int]:
        """(credits, starts) to grant now; (0, 0): none due."""
        target = self.target()
        batch = max(1, (target - self.slots) // 2)
        free = max(0, self.slots - self.outstanding)
        starts = max(0, free - self.starts_out)
        credits = target - self.promised if target >= self.promised + batch else 0
        return max(credits, starts), starts

    def sent(self, credits: int, starts: int) -> None:
        self.promised += credits
        self.starts_out += starts

    def received(self, n: int, on_starts: int) -> None:
        self.outstanding += n
        self.starts_out -= min(self.starts_out, on_starts)

    def done(self, n: int) -> None:
        self.outstanding -= min(self.outstanding, n)
        self.promised -= min(self.promised, n)

    def forgot(self) -> None:
        """A new registration: the broker holds none of our credits; held tasks keep theirs."""
        self.promised = self.outstanding
        self.starts_out = 0


class TaskTimes:
    """Mean run time by task name, told to the broker (READY run_ns) when new or 4x off
    what it was told. The I/O thread's."""

    def __init__(self):
        self._told: dict[str, int] = {}
        self._due: dict[str, int] = {}
        self._batch: dict[str, list[int]] = {}

    def add(self, name: str, ns: int) -> None:
        b = self._batch.setdefault(name, [0, 0])
        b[0] += 1
        b[1] += ns

    def take_due(self) -> dict[str, int]:
        """The means to tell now (this turn's runs), counted as told."""
        for name, (n, ns) in self._batch.items():
            mean = max(1, ns // n)
            known = self._due.get(name) or self._told.get(name, 0)
            if known == 0 or mean >= 4 * known or 4 * mean <= known:
                self._due[name] = mean
        self._batch.clear()
        if len(self._told) > 4096:
            self._told.clear()
        due, self._due = self._due, {}
        self._told.update(due)
        return due

    def forget_told(self) -> None:
        """A new broker knows no time: every one is due again."""
        self._due = {**self._told, **self._due}
        self._told.clear()


@dataclass(eq=False, slots=True)
class Run:
    """One received task. `sink` is its reply_to; `started`/`ended` (monotonic, 0.0: not
    yet) and `outcome` are set by the executor that runs it, the rest by the I/O thread."""

    task: w.Task
    sink: str
    started: float = 0.0
    ended: float = 0.0
    outcome: w.Outcome | None = None
    timed_out: bool = False


@dataclass(eq=False, slots=True)
class Batch:
    body: bytes
    ids: list[str]
    since: float
    counts: bool = True  # its tasks are done with once it leaves (a deadline's `timeout` is not)


@dataclass(eq=False)
class Sink:
    endpoint: str
    socket: zmq.Socket
    proven: bool = False  # it took a message: its socket queues across reconnections now
    first_try: float = 0.0
    via_broker: bool = False  # never reached within the window: its results go through the broker
    standalone: bool = False  # a detached task's sink: the broker cannot stand in for it
    pending: collections.deque = field(default_factory=collections.deque)


def connect_client(sock: zmq.Socket, security, endpoint: str, server_key: str = "") -> None:
    """Connects `sock` to `endpoint` ("tcp://h:p?curve=KEY" names the server's key), as a
    CURVE client when `security` is set and the endpoint is tcp. Raises zmq.ZMQError."""
    bare, key = split_keyed_endpoint(endpoint)
    if security is not None and bare.startswith("tcp://"):
        security.client(sock, server_key=key or server_key or None)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)  # a refused client retries slowly
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
    sock.connect(bare)


class Sinks:
    """Outcomes to their sinks: a PUSH socket per endpoint, sent without blocking; a batch
    a sink will not take yet waits (the worker returns no credit meanwhile); a sink never
    reached within the liveness window gets its results through the broker (`relay`); a
    batch waiting 10 windows is given up and its tasks retried. Afterwards `done` counts
    the tasks done with and `retries` holds the ids to RETRY: the caller takes both."""

    def __init__(self, ctx: zmq.Context, security, window: float, relay, batch_bytes: int):
        self._ctx = ctx
        self._security = security
        self._window = window
        self._relay = relay  # relay(body) -> bool: a RESULT for the broker, sent or not
        self._batch_bytes = batch_bytes
        self._sinks: collections.OrderedDict[str, Sink] = collections.OrderedDict()
        self._unusable: set[str] = set()
        self.done = 0
        self.retries: list[str] = []

    def _open(self, endpoint: str, immediate: bool) -> zmq.Socket:
        s = self._ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 5000)
        s.setsockopt(zmq.SNDHWM, 16)
        if immediate:  # until proven: a sink that is never reached takes nothing
            s.setsockopt(zmq.IMMEDIATE, 1)
        try:
            connect_client(s, self._security, endpoint)
        except Exception as e:  # a bad address, or a key that is no key: "tcp://h:p?curve=..." comes from afar
            s.close(linger=0)
            raise e if isinstance(e, zmq.ZMQError) else zmq.ZMQError(errno.EINVAL, f"unusable endpoint: {e}")
        return s

    def get(self, endpoint: str) -> Sink:
        """The sink at `endpoint`, connected on first use. Raises zmq.ZMQError if unusable."""
        sink = self._sinks.get(endpoint)
        if sink is not None:
            self._sinks.move_to_end(endpoint)
            return sink
        sink = Sink(endpoint, self._open(endpoint, immediate=True))
        self._sinks[endpoint] = sink
        if len(self._sinks) > SINK_CAPACITY:
            _, old = self._sinks.popitem(last=False)
            for b in old.pending:
                self._give_up(b)
            old.socket.close()
        return sink

    def connect(self, endpoint: str) -> None:
        """Connects ahead of the first result (errors are reported when it is sent)."""
        try:
            self.get(endpoint)
        except zmq.ZMQError:
            pass

    def deliver(self, endpoint: str, outcomes: list[w.Outcome], standalone: bool, now: float,
                counts: bool = True) -> None:
        """Sends `outcomes` as RESULT batches, or queues them behind those waiting."""
        try:
            sink = self.get(endpoint)
        except zmq.ZMQError as e:
            if endpoint not in self._unusable and len(self._unusable) < 1024:
                self._unusable.add(endpoint)
                log.warning("worker.sink_unusable endpoint=%r error=%r (its tasks are retried)", endpoint, str(e))
            for b in self._batches(outcomes, now, counts):
                self._give_up(b)
            return
        sink.standalone = sink.standalone or standalone
        if not sink.proven and not sink.first_try:
            sink.first_try = now
        for b in self._batches(outcomes, now, counts):
            if sink.pending or not self._send(sink, b, now):
                sink.pending.append(b)

    def _batches(self, outcomes: list[w.Outcome], now: float, counts: bool):
        start, size = 0, 0
        for i, o in enumerate(outcomes):
            n = len(o.result) + len(o.error) + len(o.id) + 256
            if i > start and size + n > self._batch_bytes:
                yield self._batch(outcomes[start:i], now, counts)
                start, size = i, 0
            size += n
        if start < len(outcomes):
            yield self._batch(outcomes[start:], now, counts)

    @staticmethod
    def _batch(outcomes: list[w.Outcome], now: float, counts: bool) -> Batch:
        return Batch(w.encode_results(outcomes), [o.id for o in outcomes], now, counts)

    def _push(self, sink: Sink, b: Batch) -> bool | None:
        """True: sent; False: not now; None: the socket failed."""
        try:
            sink.socket.send_multipart([w.header(w.Command.RESULT), b.body], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as e:
            log.warning("worker.sink_failed endpoint=%r error=%r", sink.endpoint, str(e))
            return None

    def _send(self, sink: Sink, b: Batch, now: float) -> bool:
        """Whether `b` is handled (sent, relayed or given up); False: it waits."""
        pushed = self._push(sink, b)
        if pushed is None:
            self._give_up(b)
            return True
        if pushed:
            self._sent(sink, b)
            return True
        if sink.via_broker:
            return self._relay_batch(b)
        if not sink.proven and not sink.standalone and now - sink.first_try > self._window:
            sink.via_broker = True
            log.warning("worker.sink_unreachable endpoint=%s (no connection in %.0f ms: results go through the "
                        "broker; the producer should advertise an address this host reaches)", sink.endpoint,
                        self._window * 1000)
            return self._relay_batch(b)
        if now - b.since > 10 * self._window:
            log.warning("worker.sink_stalled endpoint=%s retrying=%d", sink.endpoint, len(b.ids))
            self._give_up(b)
            return True
        return False

    def _sent(self, sink: Sink, b: Batch) -> None:
        if b.counts:
            self.done += len(b.ids)
        if sink.via_broker:
            sink.via_broker = False
            log.info("worker.sink_reachable endpoint=%s (results go to it directly again)", sink.endpoint)
        if not sink.proven:
            # A socket without IMMEDIATE keeps what it queued across a reconnection; the
            # old one delivers what it holds while it lingers.
            try:
                fresh = self._open(sink.endpoint, immediate=False)
            except zmq.ZMQError:
                return
            sink.socket.close()
            sink.socket, sink.proven = fresh, True

    def _relay_batch(self, b: Batch) -> bool:
        if self._relay(b.body):
            if b.counts:
                self.done += len(b.ids)
        else:
            self._give_up(b)
        return True

    def _give_up(self, b: Batch) -> None:
        self.retries.extend(b.ids)
        if b.counts:
            self.done += len(b.ids)

    def flush(self, now: float) -> None:
        """Sends what waits, in order, as far as the sinks take it."""
        for sink in list(self._sinks.values()):
            while sink.pending and self._send(sink, sink.pending[0], now):
                sink.pending.popleft()

    def waiting(self) -> list[zmq.Socket]:
        """The sockets of sinks with batches waiting (to poll for POLLOUT)."""
        return [s.socket for s in self._sinks.values() if s.pending]

    def close(self, linger_ms: int) -> None:
        for s in self._sinks.values():
            s.socket.close(linger=linger_ms)
        self._sinks.clear()


class Runner:
    """One worker process (a solo or threads pool, or one child of a processes pool): the
    I/O loop on the calling thread and `slots` executor threads. run() returns the exit
    status: 0 (stopped gracefully), EXIT_AT_ONCE, or EXIT_REPLACED (replace_on_timeout: a
    task ran past its deadline and cannot be stopped, so the process must end)."""

    def __init__(self, worker, worker_id: str, pool: str, slots: int, stop: Stop, restarts: int = 0,
                 replace_on_timeout: bool = False, child: bool = False, lost_key: bytes = b""):
        self.worker = worker
        self.id = worker_id
        self.lost_key = lost_key  # a pool's child: its supervisor's key for LOST, said at HELLO
        self.pool = pool
        self.slots = slots
        self.restarts = restarts
        self.child = child
        self._stop = stop
        self._replace_on_timeout = replace_on_timeout
        self._window = worker.heartbeat * worker.liveness
        self._credits = Credits(slots, worker.prefetch)
        self._times = TaskTimes()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # runs for the executors; None: leave
        self._done: collections.deque[Run] = collections.deque()  # runs the executors finished
        self._woken = False  # an executor wrote to the Stop pipe since the I/O thread last read it
        self._abort = False  # executors: take no more runs
        self._timed: set[Run] = set()  # held runs with a timeout
        self._retries: list[str] = []
        self._timed_out: list[str] = []  # replace_on_timeout: ids whose `timeout` this worker sent
        self._replace = False
        self._stopping = False
        self._logged: set[str] = set()
        self._ctx: zmq.Context | None = None
        self._broker: zmq.Socket | None = None
        self._sinks: Sinks | None = None
        self._executors: list[threading.Thread] = []
        self._last_from_broker = self._next_heartbeat = 0.0
        self._stall: StallMeter | None = None  # I/O thread
        self._backoff = worker.heartbeat
        self._reregister = False  # an unreadable DISPATCH: register again at the next heartbeat

    def _once(self, key: str, level: int, message: str, *args) -> None:
        """Logs `message` the first time `key` is seen (up to 1024 keys)."""
        if key in self._logged or len(self._logged) >= 1024:
            return
        self._logged.add(key)
        log.log(level, message, *args)

    # The loop ------------------------------------------------------------

    def run(self) -> int:
        self._stop.install(child=self.child)
        self._ctx = zmq.Context()
        payload = self.worker.max_message_bytes - MESSAGE_FIELDS
        self._sinks = Sinks(self._ctx, self.worker.security, self._window, self._relay,
                            min(BATCH_BYTES, self.worker.max_message_bytes // 2))
        self._payload_limit = payload
        for i in range(self.slots):
            name = f"{self.id}/{i}" if self.slots > 1 else self.id
            t = threading.Thread(target=self._execute, args=(name,), name=f"drover-executor-{i}", daemon=True)
            t.start()
            self._executors.append(t)
        self._connect()
        log.info("worker.started id=%s broker=%s pool=%s slots=%d tasks=%d", self.id, self.worker.broker, self.pool,
                 self.slots, len(self.worker.tasks))
        now = time.monotonic()
        self._stall = StallMeter(self.worker.heartbeat, now)
        self._next_heartbeat = now + self.worker.heartbeat
        try:
            return self._loop()
        finally:
            self._stop.restore()

    def _loop(self) -> int:
        while True:
            if self._stop.requests >= 2:
                return self._stop_at_once()
            if self._stop.requests and not self._stopping:
                self._stopping = True
                log.info("worker.stopping outstanding=%d (finishing held tasks; signal again to stop at once)",
                         self._credits.outstanding)
            now = time.monotonic()
            self._woken = False  # before the runs are collected: a run added after wakes the poll
            self._collect_done(now)
            self._sinks.flush(now)
            next_deadline = self._check_deadlines(now)
            self._take_sink_results()
            self._send_retries()
            if self._replace:
                return self._leave_to_be_replaced()
            if self._stopping and self._credits.outstanding == 0:
                return self._stop_gracefully()
            if not self._stopping:
                self._top_up()
            self._wait(next_deadline)
            self._drain_broker()
            now = time.monotonic()
            self._check_stall(now)
            if now >= self._next_heartbeat:
                self._on_heartbeat(now)

    def _wait(self, next_deadline: float) -> None:
        """Waits for the broker, the Stop pipe (executors, signals) or a sink that frees, at
        most until the next timer."""
        poller = zmq.Poller()
        poller.register(self._broker, zmq.POLLIN)
        poller.register(self._stop.fd, zmq.POLLIN)
        waiting = self._sinks.waiting()
        for s in waiting:
            poller.register(s, zmq.POLLOUT)
        start = time.monotonic()
        until = min(self._next_heartbeat, next_deadline)
        if waiting:
            until = min(until, start + 0.1)  # a sink's window and stall limits
        if self._done:
            until = start
        timeout_ms = max(0.0, until - start) * 1000
        if timeout_ms:
            timeout_ms += 1
        self._stall.will_wait(timeout_ms / 1000)
        poller.poll(timeout_ms)
        self._stop.drain()

    def _check_stall(self, now: float) -> None:
        """Moves the broker's liveness on by a stall of this process: time since the last check
        that no wait explains. The whole turn counts, since a stop can land while the loop works
        between two waits."""
        late = self._stall.check(now)
        if late:
            # This process did not run: the broker's silence meanwhile is not the broker's.
            self._last_from_broker = StallMeter.shifted(self._last_from_broker, late, now)
            log.warning("worker.stalled ms=%d (this process did not run: the broker is given its liveness "
                        "window again)", round(late * 1000))

    # Executors (executor threads) ------------------------------------------

    def _execute(self, name: str) -> None:
        """An executor thread: runs queued runs until told to leave or aborted."""
        tasks = self.worker.tasks
        while True:
            run = self._queue.get()
            if run is None or self._abort:
                return
            t = run.task
            out = w.Outcome(id=t.id, task=t.name, attempt=t.attempt, worker=name, token=t.token)
            run.started = time.monotonic()
            if t.timeout_ms:
                self._wake()  # for the I/O thread to wait for its deadline
            try:
                fn = tasks.get(t.name)
                if fn is None:
                    raise ArgumentError(f"unknown task '{t.name}'")
                out.result = fn.call(t.args)
                if len(out.result) > self._payload_limit:
                    raise ArgumentError(f"result too large: {len(out.result)} bytes, where at most "
                                        f"{self._payload_limit} fit (the worker's max_message_bytes "
                                        f"{self.worker.max_message_bytes}, less {MESSAGE_FIELDS} for the message)")
            except BaseException as e:  # a task's SystemExit or KeyboardInterrupt ends the task, not the thread
                out.status, out.result, out.error = "error", b"", describe_error(e)
            run.ended = time.monotonic()
            out.elapsed_us = int((run.ended - run.started) * 1e6)
            run.outcome = out
            self._done.append(run)
            if not self._woken:
                self._woken = True
                self._stop.wake()

    def _wake(self) -> None:
        self._stop.wake()

    # Outcomes, deadlines, retries (I/O thread) -------------------------------

    def _collect_done(self, now: float) -> None:
        """Takes the executors' finished runs: their outcomes to their sinks, by sink."""
        by_sink: dict[str, list[w.Outcome]] = {}
        standalone: set[str] = set()
        dropped = busy = n = 0
        while self._done:
            run = self._done.popleft()
            ns = int((run.ended - run.started) * 1e9)
            n += 1
            busy += ns
            self._times.add(run.task.name, ns)
            self._timed.discard(run)
            out = self._final_outcome(run)
            if out is None:
                dropped += 1
                continue
            by_sink.setdefault(run.sink, []).append(out)
            if run.task.detached:
                standalone.add(run.sink)
        if not n:
            return
        self._credits.add_runs(n, busy)
        self._credits.done(dropped)
        for sink, outcomes in by_sink.items():
            self._sinks.deliver(sink, outcomes, sink in standalone, now)

    def _final_outcome(self, run: Run) -> w.Outcome | None:
        """The outcome to send for a finished run, or None: it timed out already, or it
        runs again (RETRY: an error with retry_on_error, or a run that ended past its
        deadline, with attempts left)."""
        t, out = run.task, run.outcome
        again = t.attempt < t.max_attempts
        if t.timeout_ms:
            if run.timed_out:
                return None  # its deadline was handled; the late result is dropped
            ms = (run.ended - run.started) * 1000
            if ms >= t.timeout_ms:  # ended past its deadline before this thread saw it
                if again:
                    log.warning("task.timeout id=%s attempt=%d/%d ms=%d (finished late; retrying)", t.id, t.attempt,
                                t.max_attempts, ms)
                    self._retries.append(t.id)
                    return None
                return self._timeout_outcome(t, out.worker)
        if out.status == "error" and t.retry_on_error and again:
            log.info("task.error id=%s attempt=%d/%d error=%r (retrying)", t.id, t.attempt, t.max_attempts, out.error)
            self._retries.append(t.id)
            return None
        return out

    def _timeout_outcome(self, t: w.Task, worker: str) -> w.Outcome:
        return w.Outcome(id=t.id, task=t.name, status="timeout", error=f"timed out after {t.timeout_ms} ms",
                         attempt=t.attempt, worker=worker, elapsed_us=t.timeout_ms * 1000, token=t.token)

    def _check_deadlines(self, now: float) -> float:
        """Ends the runs past their deadline: RETRY while attempts remain, else a `timeout`
        to the sink. The function runs on (a thread cannot be stopped): its slot stays
        busy, its result is dropped. Returns the next deadline."""
        nearest = float("inf")
        for run in self._timed:
            if run.timed_out or not run.started:
                continue
            t = run.task
            deadline = run.started + t.timeout_ms / 1000
            if deadline > now:
                nearest = min(nearest, deadline)
                continue
            run.timed_out = True
            self._replace = self._replace_on_timeout
            if t.attempt < t.max_attempts:
                log.warning("task.timeout id=%s attempt=%d/%d (retrying)", t.id, t.attempt, t.max_attempts)
                self._retries.append(t.id)
                continue
            log.warning("task.timeout id=%s attempt=%d/%d sink=%s", t.id, t.attempt, t.max_attempts, run.sink)
            if self._replace_on_timeout:
                self._timed_out.append(t.id)
            # Not done with yet: the run still holds its slot until its function returns.
            self._sinks.deliver(run.sink, [self._timeout_outcome(t, self.id)], t.detached, now, counts=False)
        return nearest

    def _take_sink_results(self) -> None:
        s = self._sinks
        if s.done:
            self._credits.done(s.done)
            s.done = 0
        if s.retries:
            self._retries.extend(s.retries)
            s.retries.clear()

    def _relay(self, body: bytes) -> bool:
        """A RESULT for the broker to pass on (its sink is unreachable); whether it was sent."""
        return self._send(w.Command.RESULT, body)

    def _send_retries(self) -> None:
        if not self._retries:
            return
        ids, self._retries = self._retries, []
        log.debug("task.retry n=%d", len(ids))
        if not self._send(w.Command.RETRY, w.encode_ids(ids)):
            log.warning("worker.retry_unsent n=%d (the broker connection is full: they run again when it "
                        "takes this worker for gone)", len(ids))

    def _top_up(self) -> None:
        credits, starts = self._credits.top_up()
        run_ns = self._times.take_due()
        if credits == 0 and not run_ns:
            return
        if self._send(w.Command.READY, w.encode_ready(credits, starts, run_ns)):
            self._credits.sent(credits, starts)

    def _send(self, command: w.Command, body: bytes | None = None) -> bool:
        """Sends a message to the broker without blocking; whether it went."""
        frames = [w.header(command)] if body is None else [w.header(command), body]
        try:
            self._broker.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError:
            return False

    # The broker (I/O thread) ---------------------------------------------------

    def _connect(self) -> None:
        """Registers (HELLO) on a fresh connection, saying how many tasks it still holds."""
        if self._broker is not None:
            self._broker.close(linger=0)
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, self.worker.max_message_bytes)
        connect_client(s, self.worker.security, self.worker.broker)
        self._broker = s
        hello = w.encode_hello(self.id, self.worker.host, os.getpid(), self.pool, self.slots,
                               sorted(self.worker.tasks), self.restarts, self.worker.max_message_bytes,
                               self._credits.outstanding, self.lost_key)
        self._send(w.Command.HELLO, hello)
        self._last_from_broker = time.monotonic()
        self._reregister = False
        self._credits.forgot()
        self._times.forget_told()
        if not self._stopping:
            self._top_up()

    def _drain_broker(self) -> None:
        for _ in range(DRAIN_BUDGET):
            try:
                frames = self._broker.recv_multipart(flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            except zmq.ZMQError as e:
                self._once("recv:" + str(e), logging.WARNING, "worker.broker_recv_failed error=%r", str(e))
                return
            self._last_from_broker = time.monotonic()
            if len(frames) not in (1, 2):
                self._once("frames", logging.WARNING, "worker.dropped reason=bad_frames frames=%d", len(frames))
                continue
            try:
                command = w.parse_header(frames[0])
            except w.ProtocolError as e:
                self._once(e.reason, logging.WARNING, "worker.dropped reason=%s detail=%r", e.reason, e.detail)
                continue
            try:
                self._on_broker_message(command, frames[1] if len(frames) == 2 else b"")
            except Exception:  # a message no broker sends must not end the worker
                if "handler" not in self._logged:
                    self._logged.add("handler")
                    log.exception("worker.dropped reason=handler_failed command=%s", command.name)

    def _on_broker_message(self, command: w.Command, body: bytes) -> None:
        if command == w.Command.DISPATCH:
            self._on_dispatch(body)
        elif command == w.Command.HEARTBEAT:
            pass
        elif command == w.Command.RESET:
            log.info("worker.reset (the broker does not know us): registering again")
            self._connect()
        elif command == w.Command.BYE:
            log.info("worker.broker_bye (broker stopping): will reconnect")
            self._last_from_broker = time.monotonic() - self._window  # the liveness check reconnects
        elif command == w.Command.ERROR:
            self._on_error(body)
        else:
            self._once("unexpected:" + command.name, logging.WARNING, "worker.dropped reason=unexpected command=%s",
                       command.name)

    def _on_error(self, body: bytes) -> None:
        """The broker refused a message of ours: logged once a reason, as nothing here can fix it."""
        try:
            d = w.unpack(body)
        except w.ProtocolError:
            d = {}
        reason, detail = d.get("reason", "?"), d.get("detail", "")
        self._once(f"error:{reason!r}", logging.ERROR, "worker.refused_by_broker reason=%r detail=%r protocol=%r",
                   reason, detail, d.get("protocol"))

    def _on_dispatch(self, body: bytes) -> None:
        """Queues a DISPATCH's tasks for the executors."""
        try:
            tasks = w.decode_tasks(body)
        except Exception as e:  # ProtocolError, and anything else a hostile body may raise
            # Its tasks took credits that no task here will give back: registering again
            # has the broker requeue what it holds for us and restart our credits.
            self._once("dispatch:" + type(e).__name__ + str(getattr(e, "reason", "")), logging.WARNING,
                       "worker.dropped reason=%s (an unreadable DISPATCH: registering again) detail=%r",
                       getattr(e, "reason", "bad_body"), str(e)[:200])
            self._reregister = True
            return
        if not tasks:
            return
        if self._credits.outstanding + len(tasks) > max(HELD_LIMIT, 2 * self._credits.promised):
            self._once("overflow", logging.WARNING, "worker.dropped reason=over_credits tasks=%d held=%d credits=%d "
                       "(registering again)", len(tasks), self._credits.outstanding, self._credits.promised)
            self._reregister = True
            return
        self._credits.received(len(tasks), sum(1 for t in tasks if t.start))
        for t in tasks:
            run = Run(t, t.reply_to)
            if t.timeout_ms:
                self._timed.add(run)
            self._queue.put(run)
        for sink in {t.reply_to for t in tasks}:
            self._sinks.connect(sink)  # ahead of the results

    def _on_heartbeat(self, now: float) -> None:
        """Sends HEARTBEAT; registers again when asked to or when the broker has been silent
        a liveness window (with back-off)."""
        self._send(w.Command.HEARTBEAT, w.encode_heartbeat(held=self._credits.outstanding))
        self._next_heartbeat = now + self.worker.heartbeat
        if self._reregister:
            self._connect()
            return
        if now - self._last_from_broker <= self._window:
            self._backoff = self.worker.heartbeat
            return
        log.warning("worker.broker_silent broker=%s ms=%d reconnecting backoff_ms=%d (is the broker running and "
                    "reachable at that address, its --backend, and, with security, does this worker have the "
                    "fleet's keys?)", self.worker.broker, (now - self._last_from_broker) * 1000, self._backoff * 1000)
        self._connect()
        self._next_heartbeat = now + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    # Stopping ----------------------------------------------------------------

    def _close(self, broker_linger_ms: int, sink_linger_ms: int) -> None:
        """Closes every socket (what they hold leaves within their linger) and the context."""
        self._broker.close(linger=broker_linger_ms)
        self._sinks.close(sink_linger_ms)
        self._ctx.term()

    def _stop_gracefully(self) -> int:
        self._send(w.Command.BYE)
        for _ in self._executors:
            self._queue.put(None)
        for t in self._executors:
            t.join()
        self._close(1000, 5000)
        log.info("worker.stopped id=%s", self.id)
        return 0

    def _stop_at_once(self) -> int:
        """Leaves its running tasks (the broker requeues them at BYE, without counting an attempt)."""
        self._abort = True
        log.warning("worker.stop_at_once outstanding=%d", self._credits.outstanding)
        self._send(w.Command.BYE)
        self._close(500, 0)
        return EXIT_AT_ONCE

    def _leave_to_be_replaced(self) -> int:
        """A task ran past its deadline and cannot be stopped: reports the tasks whose
        `timeout` it sent (BYE ids), lets the messages leave, and has the process end."""
        log.warning("worker.replace timed_out=%d (the task runs on: this process ends and its supervisor starts a "
                    "new one)", len(self._timed_out))
        self._abort = True
        self._send(w.Command.BYE, w.encode_ids(self._timed_out))
        self._close(2000, 5000)
        return EXIT_REPLACED
