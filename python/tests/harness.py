"""A fleet of real drover programs for the Python tests: a broker on ephemeral
ports, C++ or Python workers, each killed when the test ends.

Programs come from $DROVER_BIN (set by ctest: this build's build/bin)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

BIN = Path(os.environ.get("DROVER_BIN", Path(__file__).resolve().parents[2] / "build" / "bin"))
PYTHON_DIR = Path(__file__).resolve().parents[1]


def program(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise unittest.SkipTest(f"{path} is not built (set DROVER_BIN to the build's bin directory)")
    return str(path)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Polls predicate() every 20 ms; returns its first truthy value, or fails after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Fleet:
    """One broker and the workers a test starts; stop() (or the context) kills them all."""

    def __init__(self, secure: bool = False, heartbeat_ms: int = 200, broker_args: list[str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="drover-py-"))
        self.procs: list[subprocess.Popen] = []
        self.heartbeat_ms = heartbeat_ms
        self.security_dir = None
        if secure:
            self.security_dir = self.dir / "fleet"
            subprocess.run([program("drover-keygen"), "--fleet", str(self.security_dir)], check=True,
                           stdout=subprocess.DEVNULL)
        self.broker_args = broker_args or []
        self.frontend = self.backend = ""
        self.broker = None
        self.start_broker()

    def security_args(self) -> list[str]:
        return ["--security", str(self.security_dir)] if self.security_dir else []

    def start_broker(self) -> None:
        """Starts (or restarts, on the same ports) the broker and waits for its endpoints."""
        ep = self.dir / "endpoints.json"
        ep.unlink(missing_ok=True)
        front = self.frontend or "tcp://127.0.0.1:*"
        back = self.backend or "tcp://127.0.0.1:*"
        self.broker = self.spawn([program("drover-broker"), "--frontend", front, "--backend", back,
                                  "--endpoints-file", str(ep), "--heartbeat-ms", str(self.heartbeat_ms),
                                  "--log-level", "warn", *self.security_args(), *self.broker_args])
        endpoints = wait_for(lambda: ep.exists() and ep.stat().st_size and json.loads(ep.read_text()),
                             what="the broker's endpoints file")
        self.frontend, self.backend = endpoints["frontend"], endpoints["backend"]

    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        p = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.procs.append(p)
        return p

    def cpp_worker(self, *args: str, pool: str = "threads", concurrency: int = 2) -> subprocess.Popen:
        """A drover-worker (built-in tasks: echo, sum_random, sleep_ms, fail, crash, ...)."""
        return self.spawn([program("drover-worker"), "--broker", self.backend, "--pool", pool, "-c",
                           str(concurrency), "--heartbeat-ms", str(self.heartbeat_ms), "--log-level", "warn",
                           *self.security_args(), *args])

    def python_worker(self, module: str, *args: str, pool: str = "processes", concurrency: int = 2,
                      log_level: str = "info", **kwargs) -> subprocess.Popen:
        """`python -m drover worker MODULE` with this package (and the tests' modules) on the
        path. Its log goes to p.log_path (read it with log_of) unless stderr is given."""
        env = dict(os.environ, PYTHONPATH=f"{PYTHON_DIR}{os.pathsep}{Path(__file__).parent}")
        log_path = self.dir / f"python-worker-{len(self.procs)}.log"
        own_log = "stderr" not in kwargs
        if own_log:
            kwargs["stderr"] = open(log_path, "wb")
        try:
            p = self.spawn([sys.executable, "-m", "drover", "worker", module, "--broker", self.backend, "--pool",
                            pool, "-c", str(concurrency), "--heartbeat-ms", str(self.heartbeat_ms), "--log-level",
                            log_level, *self.security_args(), *args], env=env, **kwargs)
        finally:
            if own_log:
                kwargs["stderr"].close()
        p.log_path = log_path
        return p

    @staticmethod
    def log_of(p: subprocess.Popen) -> str:
        """What a python_worker logged so far."""
        path = getattr(p, "log_path", None)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def kill(self, p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` to the process group of `p` (a pool's children too)."""
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        for p in self.procs:
            self.kill(p)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
