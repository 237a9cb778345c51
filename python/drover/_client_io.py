"""The Client's I/O thread: its loop, the broker's messages, the outcomes
at the sink, and what it sends the broker (SUBMIT batches, the queue_full
back-off, SETTLE, CANCEL, HEARTBEAT, resends).

Everything here runs on the I/O thread, which alone touches the sockets.
Callers reach it through three thread-safe deques (new task ids, cancel
requests) and an eventfd that wakes its poll; the pending table (task id ->
entry list) is shared, its entries created by callers and changed only here.
"""

from __future__ import annotations

import collections
import logging
import os
import time

import msgpack
import zmq
import zmq.utils.z85

from . import _wire
from ._stall import StallMeter
from ._wire import Command

log = logging.getLogger("drover.client")

# A pending entry is a list, indexed by these (see Client._add).
E_ID, E_SEQ, E_NAME, E_ARGS, E_OPTS, E_TARGET, E_SLOT, E_ITEM, E_SECRET, E_EPOCH, E_CANCELLED, E_NAMED = range(12)
DEFAULT_OPTS = (_wire.DEFAULT_MAX_ATTEMPTS, 0, False)  # (max_attempts, timeout_ms, retry_on_error)

HEADER = {c: _wire.header(c) for c in Command}
_COMMAND_OF = {h: c for c, h in HEADER.items()}
_STATUSES = frozenset(_wire.STATUSES)

SUBMIT_BATCH = 1000  # tasks in one SUBMIT at most
SETTLE_BATCH = 4096  # ids in one SETTLE at most
SETTLE_DELAY = 0.010  # a SETTLE waits this long for more ids (docs/design.md, "Outcome and settle")
DRAIN = 1024  # messages read from one socket before the loop serves the others
MIN_BACKOFF, MAX_BACKOFF = 0.002, 1.0  # after queue_full, doubling while refusals go on
BURST = 0.010  # tasks came this recently: callers are submitting, the loop looks for more every 1 ms

_unpackb = msgpack.unpackb
_monotonic = time.monotonic


class ClientIO:
    """The I/O thread's half of Client (a mixin: Client sets the state up in
    _init_io and implements _deliver)."""

    # --- set-up (constructor thread) ---------------------------------------

    def _init_io(self, heartbeat: float, liveness: int, queue_full_wait: float, max_message_bytes: int) -> None:
        self._heartbeat = heartbeat
        self._liveness = liveness
        self._queue_full_wait = queue_full_wait
        self._max_message_bytes = max_message_bytes
        self._batch_bytes = min(1 << 20, max_message_bytes // 2)  # a SUBMIT is cut past this many bytes
        self._pending: dict[str, list] = {}
        self._inbox: collections.deque[str] = collections.deque()  # new ids, from callers
        self._cancels: collections.deque = collections.deque()  # ids or map runs to cancel, from callers
        self._unsent: collections.deque[str] = collections.deque()
        self._settle: list[str] = []
        self._settle_timed_out = 0
        self._settle_since = 0.0
        self._settle_now = False
        self._settled_recent: list[str] = []  # own ids settled since the last HEARTBEAT
        self._settled_older: list[str] = []
        self._heartbeat_sent = self._heartbeat_answered = 0.0
        self._epoch = 0  # bumped whenever every unfinished task is to go again
        self._named = 0  # unfinished tasks with a caller's id
        self._asleep = False
        self._burst_until = 0.0
        self._stopping = False
        self._broker_room: int | None = None  # after queue_full: tasks kept at the broker at most
        self._room_growth = 0
        self._backoff = 0.0
        self._resend_at = 0.0
        self._stalled_since: float | None = None
        self._refused_logged = False
        self._instance = ""
        self._last_from_broker = _monotonic()
        self._silent_logged = False
        self._logged_once: set[str] = set()
        self._room_waiters = 0
        self.counters = collections.Counter()
        self._prover = _wire.Prover(self._sink_key)
        self._encoder = _wire.TaskEncoder()

    def _connect_broker(self) -> None:
        s = self._ctx.socket(zmq.DEALER)
        s.linger = 0
        # One routing id for the session: after a reconnect the broker sees the same producer.
        s.setsockopt(zmq.ROUTING_ID, b"P" + self._route)
        s.maxmsgsize = self._max_message_bytes
        s.sndhwm = s.rcvhwm = 100000
        if self._security is not None:
            self._security.client(s)
        s.connect(self._broker_endpoint)
        self._broker = s
        self._last_from_broker = _monotonic()

    def _wake(self) -> None:
        """Wakes the I/O thread's poll (any thread)."""
        self._asleep = False
        os.eventfd_write(self._wake_fd, 1)

    # --- the loop -----------------------------------------------------------

    def _io_main(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sink, zmq.POLLIN)
        poller.register(self._broker, zmq.POLLIN)
        poller.register(self._wake_fd, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap, zmq.POLLIN)
        self._poller = poller
        next_heartbeat = _monotonic()
        self._stall = StallMeter(self._heartbeat, next_heartbeat)
        while not self._stopping:
            try:
                next_heartbeat = self._turn(next_heartbeat)
            except Exception:  # a bug must not end the thread every future waits on
                self.counters["io_errors"] += 1
                self._log_once("io_error", logging.ERROR, "client.io_error (logged once)", exc_info=True)
                time.sleep(0.01)
        try:
            self._say_goodbye()
        finally:
            self._end_io()

    def _turn(self, next_heartbeat: float) -> float:
        """One turn of the loop: send, wait for input, read, settle, tick. Returns the next heartbeat's time."""
        start = _monotonic()
        self._take_requests()
        unsent = self._send_unsent()
        wait = min(next_heartbeat, self._settle_due()) - start
        if unsent == "socket_full":  # room in the socket wakes no poll
            wait = min(wait, 0.001)
        elif unsent == "backing_off":
            wait = min(wait, self._resend_at - start)
        # While callers submit (tasks came in the last BURST seconds) the poll waits 1 ms at most and is
        # not woken: a wake-up a task would cost a syscall and a GIL hand-over. Otherwise callers wake it
        # (_asleep): one that sees _asleep false leaves its task in the inbox, looked at once more after
        # _asleep is set.
        if start < self._burst_until:
            wait = min(wait, 0.001)
        else:
            self._asleep = True
        if wait <= 0 or self._inbox or self._cancels or self._stopping:
            self._asleep = False
            events = self._poller.poll(0)
        else:
            timeout_ms = int(wait * 1000) + 1 if self._asleep else max(1, int(wait * 1000))
            self._stall.will_wait(timeout_ms / 1000)
            events = self._poller.poll(timeout_ms)
            self._asleep = False
        for sock, _ in events:
            if sock is self._sink:
                self._drain_sink()
            elif sock is self._broker:
                self._drain_broker()
            elif sock == self._wake_fd:
                try:
                    os.eventfd_read(self._wake_fd)
                except BlockingIOError:
                    pass
            elif sock is self._zap:
                self._answer_zap()
        now = _monotonic()
        if self._settle and (self._settle_now or len(self._settle) >= SETTLE_BATCH or now >= self._settle_due()):
            self._send_settle()
        if self._room_waiters:
            with self._room:
                self._room.notify_all()
        stall = self._stall.check(now)
        if stall:
            self._after_stall(stall, now)
        if now >= next_heartbeat:
            next_heartbeat = now + self._heartbeat
            self._on_tick(now)
        return next_heartbeat

    def _take_requests(self) -> None:
        """Moves new tasks to the unsent queue and sends the CANCELs asked for."""
        inbox, unsent, pending = self._inbox, self._unsent, self._pending
        if inbox:
            self._burst_until = _monotonic() + BURST
        while inbox:
            tid = inbox.popleft()
            unsent.append(tid)
            e = pending.get(tid)
            if e is not None and e[E_NAMED]:
                self._named += 1
        if self._cancels:
            self._take_cancels()

    def _take_cancels(self) -> None:
        ids = []
        while self._cancels:
            what = self._cancels.popleft()
            if what is None:  # every unfinished task
                ids.extend(self._pending)
            elif isinstance(what, str):
                ids.append(what)
            else:  # a map run
                ids.extend(t for t, e in self._pending.items() if e[E_TARGET] is what)
        to_broker = []
        for tid in ids:
            e = self._pending.get(tid)
            if e is None:
                continue
            e[E_CANCELLED] = True
            if e[E_EPOCH] < 0:  # the broker never had it (or gave it back): it ends here
                self._finish_local(tid, "cancelled", "cancelled before it was sent")
            else:
                to_broker.append(tid)
        for i in range(0, len(to_broker), SETTLE_BATCH):
            self._send(Command.CANCEL, _wire.encode_ids(to_broker[i:i + SETTLE_BATCH]))

    def _send(self, command: Command, body: bytes = b"") -> bool:
        """Sends a message to the broker without blocking; False if its queue is full."""
        try:
            self._broker.send_multipart((HEADER[command], body), zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _on_tick(self, now: float) -> None:
        """Once a heartbeat period: HEARTBEAT, refused tasks' expiry, and a reconnect after the broker's silence."""
        self._forget_read_settles(now)
        if self._unsent:
            self._expire_refused(now)
        self._send(Command.HEARTBEAT)
        silent = now - self._last_from_broker
        if silent > self._heartbeat * self._liveness:
            self._reconnect(silent)

    def _after_stall(self, stall: float, now: float) -> None:
        """This process was stopped for `stall` seconds: the broker's silence meanwhile is not the broker's."""
        self._last_from_broker = StallMeter.shifted(self._last_from_broker, stall, now)
        resend = stall > self._heartbeat * self._liveness
        log.warning("client.stalled ms=%d resend=%d", stall * 1000, len(self._pending) if resend else 0)
        if resend:
            self._resend_unfinished()

    def _reconnect(self, silent: float) -> None:
        level = logging.DEBUG if self._silent_logged else logging.WARNING
        self._silent_logged = True
        log.log(level, "client.broker_silent broker=%s ms=%d reconnecting resend=%d (is the broker running and "
                "reachable at that address, and, if it runs with --security, does this client have the fleet's "
                "keys and is its key on the broker's allow-list?)", self._broker_endpoint, silent * 1000,
                len(self._pending))
        self.counters["reconnects"] += 1
        self._poller.unregister(self._broker)
        self._broker.close(linger=0)
        self._connect_broker()
        self._poller.register(self._broker, zmq.POLLIN)
        self._resend_unfinished()
        self._settle_again()

    def _say_goodbye(self) -> None:
        """The last CANCEL, SETTLE and BYE as the I/O thread ends; unfinished tasks end cancelled."""
        self._take_requests()
        left = [t for t, e in self._pending.items() if e[E_EPOCH] >= 0]
        for i in range(0, len(left), SETTLE_BATCH):
            self._send(Command.CANCEL, _wire.encode_ids(left[i:i + SETTLE_BATCH]))
        self._send_settle()
        self._send(Command.BYE)
        for tid in list(self._pending):
            self._finish_local(tid, "cancelled", "client closed")

    def _end_io(self) -> None:
        self._broker.close(linger=500)  # let the last SETTLE, CANCEL and BYE leave
        self._sink.close(linger=0)
        if self._zap is not None:
            self._zap.close(linger=0)
        os.close(self._wake_fd)
        self._ctx.term()
        if self._sink_ipc_path:
            try:
                os.unlink(self._sink_ipc_path)
            except OSError:
                pass
        with self._room:
            self._room.notify_all()

    def _log_once(self, key: str, level: int, message: str, *args, **kwargs) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            log.log(level, message, *args, **kwargs)

    # --- what the I/O thread sends the broker -------------------------------

    def _at_broker(self) -> int:
        """Tasks the broker holds of ours as far as we know: sent and not refused, or finished and not settled."""
        known = len(self._pending) + len(self._settle)
        return max(0, known - len(self._unsent) - len(self._inbox))

    def _send_unsent(self) -> str:
        """Sends what the unsent queue holds, in batches, as far as the socket and the broker's room allow.
        Returns "none" (all sent), "socket_full", "no_room" or "backing_off"."""
        unsent, pending, epoch = self._unsent, self._pending, self._epoch
        if not unsent:
            return "none"
        if self._resend_at and _monotonic() < self._resend_at:
            return "backing_off"
        if self._named and self._settle:
            self._send_settle()  # an id given again must reach the broker after the SETTLE of its earlier run
        budget = 1 << 62 if self._broker_room is None else max(0, self._broker_room - self._at_broker())
        while unsent and budget > 0:
            items, entries, size = [], [], 0
            most = min(SUBMIT_BATCH, budget)
            while unsent and len(items) < most and size < self._batch_bytes:
                tid = unsent.popleft()
                e = pending.get(tid)
                if e is None or e[E_EPOCH] == epoch:
                    continue  # finished, or sent already since the last resend
                if e[E_CANCELLED]:
                    self._finish_local(tid, "cancelled", "cancelled before it was sent")
                    continue
                try:
                    item = e[E_ITEM] or self._encode(tid, e)
                except (ValueError, TypeError, OverflowError) as err:  # keeps the batch's other tasks
                    self._finish_local(tid, "rejected", f"cannot encode the task: {err}")
                    continue
                items.append(item)
                entries.append(e)
                size += len(item)
            if not items:
                break
            if not self._send(Command.SUBMIT, self._encoder.submit(items, self._reply_to)):
                unsent.extendleft(e[E_ID] for e in reversed(entries))
                return "socket_full"
            for e in entries:
                e[E_EPOCH] = epoch
            budget -= len(items)
            self.counters["submitted"] += len(items)
        return "no_room" if unsent else "none"

    def _encode(self, tid: str, e: list) -> bytes:
        """The entry's SUBMIT item, made once (its secret too) and kept for resends."""
        secret = e[E_SECRET] = self._prover.secret(tid)
        max_attempts, timeout_ms, retry_on_error = e[E_OPTS]
        item = e[E_ITEM] = self._encoder.task(tid, e[E_NAME], e[E_ARGS], secret, max_attempts, timeout_ms,
                                              retry_on_error)
        e[E_ARGS] = None  # the item holds them now
        return item

    def _hold_back(self, ids: list) -> None:
        """The broker refused these tasks with queue_full: they go back to the front of the unsent queue
        (in submission order), the client keeps no more at the broker than it holds now, and backs off."""
        now = _monotonic()
        again = []
        for tid in ids:
            e = self._pending.get(tid) if type(tid) is str else None
            if e is not None:
                e[E_EPOCH] = -1
                again.append(e)
        again.sort(key=lambda e: e[E_SEQ])
        self._unsent.extendleft(e[E_ID] for e in reversed(again))
        there = self._at_broker()
        self._broker_room = max(1, there)
        self._room_growth = 0
        if self._stalled_since is None:
            self._stalled_since = now
        if now >= self._resend_at:  # one back-off for the refusals of one round
            self._backoff = MIN_BACKOFF if not self._backoff else min(self._backoff * 2, MAX_BACKOFF)
            self._resend_at = now + self._backoff
        if not self._refused_logged:
            self._refused_logged = True
            log.warning("client.queue_full n=%d at_broker=%d backoff_ms=%d (the broker's queue is full: tasks are "
                        "held back and sent again as it makes room; after %d s without any they end rejected; "
                        "logged once)", len(ids), there, self._backoff * 1000, self._queue_full_wait)
        self.counters["queue_full"] += len(again)
        self._expire_refused(now)

    def _made_room(self, n: int) -> None:
        """n outcomes came: no back-off; after a queue_full, one task more at the broker a round trip."""
        self._backoff = 0.0
        self._stalled_since = None
        if self._broker_room is None:
            return
        self._room_growth += n
        while self._room_growth >= self._broker_room:
            self._room_growth -= self._broker_room
            self._broker_room += 1
        if self._broker_room >= self._window:
            self._broker_room = None

    def _expire_refused(self, now: float) -> None:
        """Once the broker has refused for queue_full_wait with no progress, the tasks not sent end rejected."""
        if self._stalled_since is None or now - self._stalled_since < self._queue_full_wait:
            return
        self._stalled_since = None
        expired = [t for t in self._unsent if t in self._pending and self._pending[t][E_EPOCH] != self._epoch]
        log.warning("client.queue_full_gave_up n=%d s=%g (the broker took none of this client's tasks and finished "
                    "none for that long: the tasks not sent end rejected: queue_full)", len(expired),
                    self._queue_full_wait)
        for tid in expired:
            self._finish_local(tid, "rejected", "queue_full")

    def _resend_unfinished(self) -> None:
        """The broker may know none of our tasks: every unfinished one goes again, under its id and secret,
        in submission order; one cancelled meanwhile ends here."""
        self._epoch += 1
        self._broker_room = None
        self._backoff = 0.0
        self._stalled_since = None
        self._resend_at = 0.0
        self._take_requests()
        self._unsent = collections.deque(sorted(self._pending, key=lambda t: self._pending[t][E_SEQ]))
        self.counters["resent"] += len(self._unsent)

    def _settle_due(self) -> float:
        return self._settle_since + SETTLE_DELAY if self._settle else float("inf")

    def _send_settle(self) -> None:
        settle = self._settle
        if not settle:
            return
        for i in range(0, len(settle), SETTLE_BATCH):
            self._send(Command.SETTLE, _wire.encode_settle(settle[i:i + SETTLE_BATCH],
                                                            self._settle_timed_out if i == 0 else 0))
        self._settle = []
        self._settle_timed_out = 0
        self._settle_now = False

    def _settle_again(self) -> None:
        """After a reconnect: the SETTLEs the broker may not have read go again (own ids only: never given
        twice, so settling one again is harmless)."""
        again = self._settled_older + self._settled_recent
        if not again:
            return
        if not self._settle:
            self._settle_since = _monotonic()
        self._settle.extend(again)
        self._settle_now = True

    def _forget_read_settles(self, now: float) -> None:
        """A HEARTBEAT leaves: settled ids the broker has read by now (it answered the previous one) are
        no longer kept for _settle_again."""
        if self._heartbeat_answered >= self._heartbeat_sent:
            self._settled_older = self._settled_recent
        else:
            self._settled_older = self._settled_older + self._settled_recent
        self._settled_recent = []
        self._heartbeat_sent = now

    # --- the broker's messages ----------------------------------------------

    def _drain_broker(self) -> None:
        recv = self._broker.recv_multipart
        for _ in range(DRAIN):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._last_from_broker = _monotonic()
            if not self._heard.is_set():
                self._heard.set()
            if self._silent_logged:
                self._silent_logged = False
                log.warning("client.broker_answered broker=%s", self._broker_endpoint)
            try:
                self._on_broker_message(frames)
            except Exception as e:  # a malformed message is dropped, never the end of the thread
                self.counters["dropped_broker"] += 1
                self._log_once("broker_message", logging.WARNING, "client.broker_message_dropped error=%r "
                               "(logged once)", e)

    def _on_broker_message(self, frames: list) -> None:
        if not frames or len(frames) > 2:
            raise _wire.ProtocolError("bad_frames", f"{len(frames)} frames")
        command = _COMMAND_OF.get(frames[0]) or _wire.parse_header(frames[0])
        body = frames[1] if len(frames) == 2 else b""
        if command == Command.HEARTBEAT:
            self._on_heartbeat(body)
        elif command == Command.REJECTED:
            ids, reason = _wire.decode_rejected(body)
            self._on_rejected(ids, reason)
        elif command == Command.RESULT:
            self._log_once("results_via_broker", logging.WARNING,
                           "client.results_via_broker: some workers cannot reach this client's sink at %s; their "
                           "results come through the broker (slower). Give a reachable address with sink_bind= or "
                           "advertise=", self._reply_to)
            self._on_results(body)
        elif command == Command.BYE:
            log.info("client.broker_bye (broker stopping)")
            self._last_from_broker = _monotonic() - self._heartbeat * self._liveness
        elif command == Command.ERROR:
            self._on_error(body)
        # anything else (ACCEPTED, SETTLED: detached tasks only, which this client does not send): liveness only

    def _on_heartbeat(self, body: bytes) -> None:
        instance = _wire.decode_heartbeat(body).get("instance", "")
        self._heartbeat_answered = _monotonic()
        if not instance:
            return
        if self._instance and instance != self._instance:
            log.warning("client.broker_restarted resending %d unfinished tasks", len(self._pending))
            self._resend_unfinished()
        self._instance = instance

    def _on_rejected(self, ids: list, reason: str) -> None:
        if reason == "queue_full":
            self._hold_back(ids)
            return
        self.counters["rejected"] += len(ids)
        for tid in ids:
            self._finish_local(tid, "rejected", reason)

    def _on_error(self, body: bytes) -> None:
        """ERROR: the broker could not read a message of ours. Logged once per reason; one that refuses a
        SUBMIT, or says the broker speaks another protocol, fails every unfinished task (the client cannot
        tell which tasks the refused message carried, and would otherwise wait for them for ever)."""
        d = _wire.unpack(body)
        reason, detail = str(d.get("reason", "")), str(d.get("detail", ""))
        command, protocol = d.get("command"), str(d.get("protocol", ""))
        self.counters["errors_from_broker"] += 1
        self._log_once("error:" + reason, logging.ERROR, "client.broker_error reason=%s detail=%r command=%s "
                       "protocol=%s (the broker could not read a message of this client's; logged once per reason)",
                       reason, detail, command, protocol)
        other_version = reason == "wrong_version" or (protocol and protocol != _wire.PROTOCOL.decode())
        if other_version or command == Command.SUBMIT:
            why = f"broker error {reason}: {detail}" + (f" (the broker speaks {protocol})" if other_version else "")
            if other_version:
                self._broken = why
            for tid in [t for t, e in self._pending.items() if e[E_EPOCH] >= 0 or other_version]:
                self._finish_local(tid, "rejected", why)

    # --- outcomes ------------------------------------------------------------

    def _drain_sink(self) -> None:
        recv = self._sink.recv_multipart
        for _ in range(DRAIN):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2 or frames[0] != HEADER[Command.RESULT]:
                self.counters["dropped_sink"] += 1
                self._log_once("sink_frames", logging.WARNING, "client.sink_dropped reason=not_a_result frames=%d "
                               "(a message that is not a RESULT; counted, logged once)", len(frames))
                continue
            self._on_results(frames[1])

    def _read_results(self, body: bytes):
        """(outcomes, the batch's worker) of a RESULT body; None (counted) if it is not one."""
        try:
            d = _unpackb(body, raw=False, unicode_errors="surrogateescape", strict_map_key=False)
            results = d["results"]
            if type(results) is not list:
                raise TypeError("results is not an array")
            return results, d.get("worker", "")
        except Exception as e:
            self.counters["dropped_sink"] += 1
            self._log_once("sink_body", logging.WARNING, "client.sink_dropped reason=bad_body error=%r (counted, "
                           "logged once)", e)
            return None

    def _on_results(self, body: bytes) -> None:
        """A RESULT body: each outcome proven by its token, settled once, delivered once."""
        got = self._read_results(body)
        if got is None:
            return
        results, batch_worker = got
        pending, settle, prover = self._pending, self._settle, self._prover
        token, secret_of = prover.token, prover.secret
        if not settle:
            self._settle_since = _monotonic()
        ready = []
        forged = bad = 0
        for o in results:
            try:
                tid = o["id"]
                worker = o.get("worker") or batch_worker
                e = pending.get(tid)
                secret = e[E_SECRET] if e is not None else None
                if o.get("token", 0) != token(secret or secret_of(tid), worker == "broker", o.get("attempt", 0)):
                    forged += 1
                    continue
                status = o["status"]
                if status not in _STATUSES:
                    bad += 1
                    continue
            except Exception:
                bad += 1
                continue
            if status == "cancelled" and worker == "broker" and o.get("error") == _wire.PRODUCER_GONE:
                self._producer_gone(tid, e)
                continue
            settle.append(tid)  # duplicates too: the broker may still hold the task
            if e is None:
                self.counters["duplicates"] += 1
                continue
            if status == "timeout":
                self._settle_timed_out += 1
            del pending[tid]
            if e[E_NAMED]:
                self._named -= 1
            else:
                self._settled_recent.append(tid)
            ready.append((e, o, worker, tid))
        if forged or bad:
            self._count_dropped(forged, bad, results)
        self._deliver_ready(ready)

    def _deliver_ready(self, ready: list) -> None:
        if len(self._pending) + len(self._settle) >= self._window:
            self._settle_now = True  # the window counts the outcomes to settle
        if not ready:
            return
        self.counters["finished"] += len(ready)
        self._made_room(len(ready))
        deliver = self._deliver
        for e, o, worker, tid in ready:
            try:
                deliver(e, o, worker, tid)
            except Exception:  # an outcome of odd types must not cost the others theirs
                self.counters["deliver_errors"] += 1
                self._log_once("deliver", logging.ERROR, "client.deliver_failed id=%r (logged once)", tid,
                               exc_info=True)

    def _producer_gone(self, tid, e) -> None:
        """The broker took this client for gone (it was stopped) and forgot the task: it goes again under its
        id, not settled (a SETTLE could end the task sent again)."""
        if e is None or self._stopping:
            return
        if e[E_CANCELLED]:
            self._finish_local(tid, "cancelled", _wire.PRODUCER_GONE)
            return
        e[E_EPOCH] = -1
        self._unsent.append(tid)
        self.counters["resubmitted"] += 1
        self._log_once("resubmitting", logging.WARNING, "client.resubmitting (the broker took this client for "
                       "gone, as it was stopped, and cancelled its tasks: they go again under their ids; logged once)")

    def _count_dropped(self, forged: int, bad: int, results: list) -> None:
        if forged:
            self.counters["forged"] += forged
            o = results[0] if results and type(results[0]) is dict else {}
            self._log_once("forged", logging.WARNING, "client.forged_result id=%r worker=%r (an outcome without its "
                           "attempt's token: dropped and counted; logged once)", o.get("id"), o.get("worker"))
        if bad:
            self.counters["dropped_sink"] += bad
            self._log_once("bad_outcome", logging.WARNING, "client.sink_dropped reason=bad_outcome n=%d (an outcome "
                           "that is not one: counted, logged once)", bad)

    def _finish_local(self, tid: str, status: str, error: str) -> None:
        """Ends a pending task with an outcome made here (rejected, cancelled); nothing to settle."""
        e = self._pending.pop(tid, None)
        if e is None:
            return
        if e[E_NAMED]:
            self._named -= 1
        self._deliver(e, {"status": status, "error": error}, "", tid)

    # --- CurveZMQ: the sink admits the workers' keys and the broker's --------

    def _answer_zap(self) -> None:
        """Answers one ZAP request (inproc://zeromq.zap.01) for the sink's CURVE handshakes."""
        try:
            frames = self._zap.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        if len(frames) < 6:
            return  # not a ZAP request: nothing can be answered
        version, request_id, mechanism = frames[0], frames[1], frames[5]
        key = zmq.utils.z85.encode(frames[6]).decode() if mechanism == b"CURVE" and len(frames) > 6 else ""
        name = self._security.allow_workers.get(key) if key else None
        if name is None:
            self._log_once("zap:" + key, logging.WARNING, "security.rejected socket=sink key=%s address=%s (a key "
                           "not in the allow-list; logged once per key)", key or mechanism.decode("ascii", "replace"),
                           frames[3].decode("ascii", "replace"))
            reply = [version, request_id, b"400", b"key not allowed", b"", b""]
        else:
            reply = [version, request_id, b"200", b"OK", name.encode(), b""]
        self._zap.send_multipart(reply)
