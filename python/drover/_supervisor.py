"""A processes pool: children forked from the registered tasks, each a solo worker.

The parent is a supervisor, as drover-worker's (programs/supervisor.cpp): it
keeps `slots` children alive, each a full worker with its own connection
and HELLO id (ID:PID, by default HOST:PID). When one dies it tells the broker
at once (LOST, over a connection of its own), so that the task it ran runs
again without waiting for the child's heartbeats to stop, and starts a new
one, counting a restart in its slot (HELLO `restarts`). A child that dies
within a second of its start is restarted after a back-off doubling from
100 ms to 5 s; one that left after a timeout (exit 75, having said BYE)
at once and without a LOST.

The parent never holds a ZeroMQ context while it forks: it opens one for
each LOST and terminates it before going on, so a child starts with no
context and no thread but the one that forked it. Stop requests go to the
children: the first as SIGTERM (finish what you hold), the second as SIGUSR2
(stop at once), later ones as SIGKILL. The parent runs on the calling thread.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass

import zmq

from . import _wire as w
from ._worker_loop import EXIT_AT_ONCE, EXIT_REPLACED, Runner, Stop, connect_client

log = logging.getLogger("drover.worker")

PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    pid: int = -1
    started: float = 0.0
    restart_at: float = 0.0
    backoff: float = 0.0
    restarts: int = 0


def describe_exit(status: int) -> str:
    if os.WIFEXITED(status):
        return f"exit {os.WEXITSTATUS(status)}"
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {status}"


def _die_with_parent(parent: int) -> None:
    """The child gets SIGKILL when its supervisor dies (Linux); exits if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


class Supervisor:
    def __init__(self, worker, slots: int, stop: Stop):
        self.worker = worker
        self.stop = stop
        self.children = [Child() for _ in range(slots)]
        self.base_id = worker.id or worker.host
        self._signals_seen = 0
        # The children say it at HELLO: the broker takes a LOST only from who knows it.
        self.lost_key = os.urandom(16)

    def child_id(self, pid: int) -> str:
        return f"{self.base_id}:{pid}"

    def run(self) -> int:
        self.stop.install(child=False)
        old_chld = signal.signal(signal.SIGCHLD, lambda *_: None) if self._main_thread() else None
        try:
            for c in self.children:
                self.start(c)
            log.info("supervisor.started children=%d broker=%s", len(self.children), self.worker.broker)
            while True:
                self.pass_on_stop()
                self.reap()
                if self.stop.requests and not any(c.pid > 0 for c in self.children):
                    break
                if not self.stop.requests:
                    self.restart_due()
                self.wait_a_turn()
        finally:
            if old_chld is not None:
                signal.signal(signal.SIGCHLD, old_chld)
            self.stop.restore()
        log.info("supervisor.stopped")
        return EXIT_AT_ONCE if self._signals_seen >= 2 else 0

    @staticmethod
    def _main_thread() -> bool:
        import threading

        return threading.current_thread() is threading.main_thread()

    def start(self, c: Child) -> None:
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            self._child_main(c, parent)  # never returns
        c.pid, c.started = pid, time.monotonic()

    def _child_main(self, c: Child, parent: int) -> None:
        """The child: a solo worker that ends the process when it is done, whatever happens."""
        status = 1
        try:
            os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor only, which passes it on once
            _die_with_parent(parent)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
                signal.signal(sig, signal.SIG_DFL)
            self.stop.close()  # the parent's pipe
            stop = Stop()
            runner = Runner(self.worker, self.child_id(os.getpid()), "processes", 1, stop, restarts=c.restarts,
                            replace_on_timeout=True, child=True, lost_key=self.lost_key)
            status = runner.run()
        except BaseException:
            log.exception("worker.child_failed")
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(status)

    def pass_on_stop(self) -> None:
        """Each new stop request goes to the children: SIGTERM, then SIGUSR2, then SIGKILL."""
        if self.stop.requests <= self._signals_seen:
            return
        self._signals_seen = self.stop.requests
        sig = {1: signal.SIGTERM, 2: signal.SIGUSR2}.get(self._signals_seen, signal.SIGKILL)
        alive = [c for c in self.children if c.pid > 0]
        log.info("supervisor.stopping signal=%s children=%d", sig.name, len(alive))
        for c in alive:
            try:
                os.kill(c.pid, sig)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for c in self.children:
                if c.pid == pid:
                    self.on_exit(c, status)

    def on_exit(self, c: Child, status: int) -> None:
        """Child `c` exited: what its tasks forked in its process group is killed (a group outlives
        its leader while members remain, so the id is still that group's), its restart is
        scheduled, and the broker told unless it said BYE."""
        child_id = self.child_id(c.pid)
        try:
            os.killpg(c.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        c.pid = -1
        if self.stop.requests:
            log.info("supervisor.child_exited id=%s how=%r", child_id, describe_exit(status))
            return
        c.restarts += 1
        now = time.monotonic()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_REPLACED:
            log.info("supervisor.child_replaced id=%s reason=timeout restarts=%d", child_id, c.restarts)
            c.backoff, c.restart_at = 0.0, now
            return
        quick = now - c.started < 1.0
        c.backoff = min(max(c.backoff * 2, 0.1), 5.0) if quick else 0.0
        c.restart_at = now + c.backoff
        log.warning("supervisor.child_died id=%s how=%r restart_in_ms=%d restarts=%d", child_id,
                    describe_exit(status), c.backoff * 1000, c.restarts)
        self.send_lost(child_id)

    def send_lost(self, child_id: str) -> None:
        """LOST {worker: child_id} on a connection (and context) opened for it and closed
        before returning: waits up to a second for it to leave."""
        ctx = zmq.Context()
        try:
            s = ctx.socket(zmq.DEALER)
            try:
                connect_client(s, self.worker.security, self.worker.broker)
                s.send_multipart([w.header(w.Command.LOST), w.encode_lost(child_id, self.lost_key)], flags=zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.warning("supervisor.lost_unsent id=%s error=%r", child_id, str(e))
            finally:
                s.close(linger=1000)
        finally:
            ctx.term()

    def restart_due(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if c.pid < 0 and now >= c.restart_at:
                self.start(c)

    def wait_a_turn(self) -> None:
        """Sleeps up to 50 ms; a stop request or a child's exit (SIGCHLD, through the
        Stop pipe) ends it sooner."""
        try:
            select.select([self.stop.fd], [], [], 0.05)
        except OSError as e:
            if e.errno != errno.EINTR:
                raise
        self.stop.drain()
