#!/usr/bin/env python3
"""Chaos soak over the real drover programs, with a ledger (scripts/soak.sh --help)."""

import argparse
import collections
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Tasks submitted and not yet ended that the soak lets build up, live and
# detached each: it measures correctness under chaos, not overload (chaos
# takes most of the fleet's slots at times, and a backlog past what the
# drain can finish would end as "missing").
MAX_OUTSTANDING = 400

HEARTBEAT_MS = 500  # every program's: liveness window 1.5 s, producer gone after 3 s
LIVENESS = 3

# Task kinds: (weight, maker). A maker returns the task line's fields for an id.
# Each kind's honest outcomes are checked by expected() below.
KINDS = {
    "echo": 55,         # echo(nonce): fast; ok with the nonce back
    "sleep": 18,        # sleep_ms(20..300): slow; ok with ms back
    "sleep_timed": 8,   # sleep_ms(20..200), timeout_ms 1500: ok within the deadline, or timeout
    "fail": 12,         # fail(msg): error with msg (a third with retry_on_error)
    "timeout": 4,       # sleep_ms(1000), timeout_ms 200: timeout, never ok
}


def make_task(kind, task_id, rng):
    t = {"id": task_id}
    if kind == "echo":
        t.update(task="echo", args=["n-%s-%d" % (task_id, rng.randrange(1 << 30))])
    elif kind == "sleep":
        t.update(task="sleep_ms", args=[rng.randint(20, 300)])
    elif kind == "sleep_timed":
        t.update(task="sleep_ms", args=[rng.randint(20, 200)], timeout_ms=1500)
    elif kind == "fail":
        t.update(task="fail", args=["boom-%s" % task_id])
        if rng.random() < 0.33:
            t.update(retry_on_error=True, max_attempts=2)
    elif kind == "timeout":
        t.update(task="sleep_ms", args=[1000], timeout_ms=200, max_attempts=rng.randint(1, 2))
    return t


def pick_kind(rng):
    return rng.choices(list(KINDS), weights=list(KINDS.values()))[0]


def problem_with(task, kind, outcome, live):
    """Why `outcome` is not an honest final outcome of `task` (None if it is)."""
    status = outcome.get("status")
    if status == "lost":
        return None  # its workers died max_attempts times (or its last run could not reach the sink)
    if status == "cancelled":
        # Nobody cancels here: a paused producer's tasks come back under their ids.
        return "cancelled, though nobody cancelled it"
    timeout_ms = task.get("timeout_ms", 0)
    if status == "ok":
        if kind in ("fail", "timeout"):
            return "ok for a task that cannot end ok"
        if outcome.get("result") != task["args"][0]:
            return "ok with result %r, expected %r" % (outcome.get("result"), task["args"][0])
        if timeout_ms and outcome.get("elapsed_ms", 0) > timeout_ms:
            return "ok after %s ms, past its timeout_ms %d" % (outcome.get("elapsed_ms"), timeout_ms)
        return None
    if status == "error":
        if kind == "fail" and outcome.get("error") == task["args"][0]:
            return None
        return "error %r" % outcome.get("error")
    if status == "timeout":
        return None if timeout_ms else "timeout for a task without timeout_ms"
    return "status %r" % status


def read_lines(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # still being written
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"unparsable": line})
    except FileNotFoundError:
        pass
    return out


def check_ledger(run_dir):
    """Reads a run directory's files; returns (counts, violations)."""
    submitted = {}  # id -> (task, kind, live)
    for s in read_lines(os.path.join(run_dir, "submitted.jsonl")):
        submitted[s["task"]["id"]] = (s["task"], s["kind"], s["live"])
    events = {}
    p = os.path.join(run_dir, "events.json")
    if os.path.exists(p):
        with open(p) as f:
            events = json.load(f)
    outcomes = collections.defaultdict(list)
    violations = collections.defaultdict(list)
    # The live producer's results, and the standalone sink's.
    for source, live in (("live.jsonl", True), ("sink.jsonl", False)):
        for o in read_lines(os.path.join(run_dir, source)):
            i = o.get("id")
            if isinstance(i, (int, float)):
                i = str(i)
            if i not in submitted or submitted[i][2] != live:
                violations["unexpected"].append("%s: an outcome for an id never submitted there: %s" % (source, o))
                continue
            outcomes[i].append(o)
    # What each detached submit said: accepted or rejected.
    submit_said = collections.defaultdict(set)
    for path in sorted(glob.glob(os.path.join(run_dir, "detached-*.jsonl"))):
        resubmit = "resubmit" in os.path.basename(path)
        for o in read_lines(path):
            i = o.get("id")
            if isinstance(i, (int, float)):
                i = str(i)
            if i not in submitted:
                violations["unexpected"].append("%s: an answer for an id never submitted: %s" % (path, o))
                continue
            if o.get("status") == "rejected" and resubmit:
                violations["unexpected"].append("%s: a resubmit rejected: %s" % (path, o))
            elif o.get("status") in ("accepted", "rejected"):
                if not resubmit:
                    submit_said[i].add(o["status"])
            else:
                violations["unexpected"].append("%s: %s" % (path, o))
    counts = collections.Counter()
    for i, (task, kind, live) in submitted.items():
        counts["submitted"] += 1
        got = outcomes.get(i, [])
        if not live and "rejected" in submit_said.get(i, ()):
            counts["rejected"] += 1
            if got:
                violations["unexpected"].append("%s: rejected at submit, yet an outcome came: %s" % (i, got))
            continue
        if not got:
            counts["missing"] += 1
            state = "accepted" if "accepted" in submit_said.get(i, ()) else "not accepted"
            violations["missing"].append("%s (%s, %s): %s" % (i, "live" if live else "detached " + state, kind, task))
            continue
        if len(got) > 1:
            counts["duplicate"] += 1
            violations["duplicate"].append("%s: %s" % (i, got))
        o = got[0]
        status = o.get("status", "?")
        counts[status] += 1
        why = problem_with(task, kind, o, live) if status != "rejected" else None
        if status == "rejected" and not live:
            why = "a detached task rejected at its sink"
        if why:
            violations["unexpected"].append("%s (%s %s): %s: %s" % (i, kind, task, why, o))
    counts["unexpected"] = len(violations["unexpected"])
    for k in ("kills", "pauses", "restarts", "resubmitted"):
        counts[k] = events.get(k, 0)
    for c in events.get("crashes", []):
        violations["crashed"].append(c)
    counts["crashed"] = len(violations["crashed"])
    return counts, violations


COLUMNS = ["submitted", "ok", "error", "timeout", "lost", "cancelled", "rejected", "missing", "duplicate",
           "unexpected", "crashed", "kills", "pauses", "restarts", "resubmitted"]


def print_table(counts, out=sys.stdout):
    widths = [max(len(c), len(str(counts.get(c, 0)))) for c in COLUMNS]
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths)), file=out)
    print("  ".join(str(counts.get(c, 0)).rjust(w) for c, w in zip(COLUMNS, widths)), file=out)


def report(run_dir, out=sys.stdout):
    counts, violations = check_ledger(run_dir)
    bad = sum(len(v) for v in violations.values())
    for kind in ("missing", "duplicate", "unexpected", "crashed"):
        items = violations.get(kind, [])
        if items:
            print("soak: %d %s, the first ones:" % (len(items), kind), file=out)
            for v in items[:15]:
                print("  " + v[:600], file=out)
    print_table(counts, out)
    return bad == 0


# --- the run ---------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LineCounter:
    """Counts the complete lines of a file that grows, reading only what is new."""

    def __init__(self, path):
        self.path, self.f, self.n = path, None, 0

    def count(self):
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return 0
        self.n += self.f.read().count(b"\n")
        return self.n


class Program:
    """One real drover process we started (and may kill, pause, restart)."""

    def __init__(self, soak, name, argv, stdin=None, stdout_path=None, restart=True):
        self.soak, self.name, self.argv, self.restart = soak, name, argv, restart
        self.stdout_path = stdout_path
        self.stdin_spec = stdin
        self.proc = None
        self.expected_exit = False  # we killed it or told it to stop
        self.starts = 0

    def start(self):
        self.starts += 1
        log = open(os.path.join(self.soak.dir, "%s.log" % self.name), "a")
        log.write("--- start %d at %.3f\n" % (self.starts, time.time()))
        log.flush()
        out = open(self.stdout_path, "a") if self.stdout_path else log
        self.proc = subprocess.Popen(self.argv, stdin=self.stdin_spec if self.stdin_spec else subprocess.DEVNULL,
                                     stdout=out, stderr=log, start_new_session=True)
        log.close()
        if out is not log:
            out.close()
        self.expected_exit = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self):
        """Its pid and, for a processes pool, its children's."""
        if not self.alive():
            return []
        pids = [self.proc.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return pids

    def kill9(self):
        if self.alive():
            self.expected_exit = True
            self.soak.resume_pid(self.proc.pid)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout=10):
        if not self.alive():
            return
        self.expected_exit = True
        for pid in self.pids():
            self.soak.resume_pid(pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = args.dir
        b = args.build_dir
        self.exe = {
            "broker": os.path.join(b, "bin", "drover-broker"),
            "worker": os.path.join(b, "bin", "drover-worker"),
            "producer": os.path.join(b, "bin", "drover-producer"),
            "sink": os.path.join(b, "bin", "drover-sink"),
        }
        for name, path in self.exe.items():
            if not os.access(path, os.X_OK):
                sys.exit("soak: %s not found at %s (build first, or --build-dir)" % (name, path))
        self.lock = threading.RLock()
        self.paused = {}  # pid -> resume time
        self.events = {"kills": 0, "pauses": 0, "restarts": 0, "resubmitted": 0, "crashes": []}
        self.submitted = open(os.path.join(self.dir, "submitted.jsonl"), "a")
        self.detached = []  # running detached submits (Program)
        self.detached_seq = 0
        self.stop_feeding = threading.Event()
        self.detached_recorded = 0
        self.fast = ["--heartbeat-ms", str(HEARTBEAT_MS), "--liveness", str(LIVENESS)]
        self.log_level = ["--log-level", args.log_level]

    def log(self, msg):
        line = "%8.3f %s" % (time.time() - self.t0, msg)
        with open(os.path.join(self.dir, "chaos.log"), "a") as f:
            f.write(line + "\n")
        if self.args.verbose:
            print("soak: " + line, file=sys.stderr)

    def record(self, task, kind, live):
        with self.lock:
            self.submitted.write(json.dumps({"task": task, "kind": kind, "live": live}) + "\n")
            self.submitted.flush()

    def pause_pid(self, pid, seconds):
        with self.lock:
            if pid in self.paused:
                return False
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                return False
            self.paused[pid] = time.time() + seconds
            self.events["pauses"] += 1
            return True

    def resume_pid(self, pid):
        with self.lock:
            if self.paused.pop(pid, None) is not None:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def resume_due(self, everything=False):
        now = time.time()
        with self.lock:
            for pid, when in list(self.paused.items()):
                if everything or when <= now:
                    self.resume_pid(pid)

    def broker_up(self, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            r = subprocess.run([self.exe["broker"], "status", "--broker", self.frontend, "--timeout-ms", "500"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return True
            self.wait(0.1)
        return False

    def wait(self, seconds):
        """Sleeps, resuming paused processes when their pause is over."""
        end = time.time() + seconds
        while True:
            self.resume_due()
            left = end - time.time()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    # -- producers --

    def feed_live(self):
        """Writes task lines to the live producer's stdin at a steady rate."""
        n = 0
        stdin = self.live.proc.stdin
        ended = LineCounter(os.path.join(self.dir, "live.jsonl"))
        try:
            while not self.stop_feeding.is_set():
                if n - ended.count() > MAX_OUTSTANDING:
                    time.sleep(0.05)
                    continue
                for _ in range(self.rng.randint(1, 8)):
                    kind = pick_kind(self.rng)
                    task = make_task(kind, "L-%d" % n, self.rng)
                    n += 1
                    stdin.write((json.dumps(task) + "\n").encode())
                    self.record(task, kind, True)
                stdin.flush()
                time.sleep(self.rng.uniform(0.02, 0.15))
        except (BrokenPipeError, OSError) as e:
            self.log("live producer stdin closed early: %s" % e)
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def submit_detached(self, lines, name):
        path = os.path.join(self.dir, "%s.in" % name)
        with open(path, "w") as f:
            for t in lines:
                f.write(json.dumps(t) + "\n")
        p = Program(self, name, [self.exe["producer"], "--broker", self.frontend] + self.fast +
                    ["submit", "--reply-to", self.sink_address],
                    stdin=open(path), stdout_path=os.path.join(self.dir, "%s.jsonl" % name), restart=False)
        p.start()
        p.stdin_spec.close()
        with self.lock:
            self.detached.append(p)

    def new_detached_batch(self):
        self.detached_seq += 1
        tasks = []
        for i in range(self.rng.randint(20, 80)):
            kind = pick_kind(self.rng)
            t = make_task(kind, "D%d-%d" % (self.detached_seq, i), self.rng)
            tasks.append(t)
            self.record(t, kind, False)
        self.detached_recorded += len(tasks)
        self.submit_detached(tasks, "detached-%d" % self.detached_seq)

    def resubmit_unfinished_detached(self):
        """After a broker restart: the detached tasks it held are gone with it
        (docs/reliability.md), so resend those accepted without an outcome yet,
        as a user of submit --reply-to must. The sink takes one outcome each."""
        done = {str(o.get("id")) for o in read_lines(os.path.join(self.dir, "sink.jsonl"))}
        accepted = set()
        for path in glob.glob(os.path.join(self.dir, "detached-*.jsonl")):
            for o in read_lines(path):
                if o.get("status") == "accepted":
                    accepted.add(str(o.get("id")))
        todo = []
        for s in read_lines(os.path.join(self.dir, "submitted.jsonl")):
            t = s["task"]
            if not s["live"] and t["id"] in accepted and t["id"] not in done:
                todo.append(t)
        if todo:
            self.events["resubmitted"] += len(todo)
            self.log("resubmit detached n=%d" % len(todo))
            self.submit_detached(todo, "detached-resubmit-%d" % self.events["restarts"])

    # -- chaos --

    def workers(self):
        return [w for w in self.worker_programs if w.alive()]

    def chaos_step(self):
        r = self.rng.random()
        if r < 0.25:  # kill -9 a pool child
            sup = self.pool
            kids = sup.pids()[1:]
            if kids:
                pid = self.rng.choice(kids)
                self.resume_pid(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.events["kills"] += 1
                    self.log("kill -9 pool child %d" % pid)
                except ProcessLookupError:
                    pass
        elif r < 0.40:  # kill -9 a worker (solo, threads, or the pool's supervisor), started again soon
            w = self.rng.choice(self.worker_programs)
            if w.alive():
                self.log("kill -9 %s %d" % (w.name, w.proc.pid))
                for pid in w.pids()[1:]:
                    self.resume_pid(pid)  # they die with it (PDEATHSIG)
                w.kill9()
                self.events["kills"] += 1
                self.restart_at[w.name] = time.time() + self.rng.uniform(0.2, 2.0)
        elif r < 0.95:  # SIGSTOP any process, SIGCONT later
            self.detached_running()
            with self.lock:
                detached = list(self.detached)
            what = self.rng.choices(["broker", "sink", "live producer", "detached producer", "worker", "pool child"],
                                    weights=[15, 15, 10, 10, 30, 20])[0]
            pid = None
            if what == "broker":
                pid = self.broker.pids()[:1]
            elif what == "sink":
                pid = self.sink.pids()[:1]
            elif what == "live producer":
                pid = self.live.pids()[:1]
            elif what == "detached producer":
                pid = self.rng.choice(detached).pids()[:1] if detached else []
            elif what == "worker":
                w = self.rng.choice(self.worker_programs)
                what = w.name
                pid = w.pids()[:1]
            else:
                pid = self.pool.pids()[1:]
            if pid:
                pid = self.rng.choice(pid)
                seconds = self.rng.uniform(0.2, 4.5)
                if self.pause_pid(pid, seconds):
                    self.log("pause %s pid %d for %.1f s" % (what, pid, seconds))
        elif time.time() >= self.next_restart_ok:  # restart the broker on the same ports
            self.restart_broker()

    def restart_broker(self):
        how = self.rng.choice(["kill -9", "SIGTERM"])
        self.log("broker restart (%s)" % how)
        if how == "kill -9":
            self.broker.kill9()
        else:
            self.broker.terminate()
        self.wait(self.rng.uniform(0.0, 2.0))
        self.broker.start()
        self.events["restarts"] += 1
        self.next_restart_ok = time.time() + self.args.restart_every
        if not self.broker_up():
            self.events["crashes"].append("the broker did not answer STATUS after restart %d" % self.events["restarts"])
        self.wait(1.5)
        self.resubmit_unfinished_detached()

    def check_processes(self):
        for p in [self.broker, self.sink, self.live] + self.worker_programs:
            if p.proc is not None and p.proc.poll() is not None and not p.expected_exit:
                if p is self.live and self.stop_feeding.is_set():
                    continue
                msg = "%s (pid %d) exited by itself with %s" % (p.name, p.proc.pid, p.proc.returncode)
                self.events["crashes"].append(msg)
                self.log(msg)
                p.expected_exit = True
                if p in self.worker_programs:
                    self.restart_at[p.name] = time.time() + 0.5
                elif p is self.broker:
                    p.start()
        now = time.time()
        for w in self.worker_programs:
            due = self.restart_at.get(w.name)
            if due is not None and due <= now and not w.alive():
                w.start()
                del self.restart_at[w.name]
                self.log("started %s again (pid %d)" % (w.name, w.proc.pid))

    def detached_running(self):
        with self.lock:
            self.detached = [d for d in self.detached if d.alive()]
            return len(self.detached)

    def all_done(self):
        if self.live.alive() or self.detached_running():
            return False
        done = {str(o.get("id")) for o in read_lines(os.path.join(self.dir, "sink.jsonl"))}
        rejected = set()
        for path in glob.glob(os.path.join(self.dir, "detached-*.jsonl")):
            for o in read_lines(path):
                if o.get("status") == "rejected":
                    rejected.add(str(o.get("id")))
        for s in read_lines(os.path.join(self.dir, "submitted.jsonl")):
            i = s["task"]["id"]
            if not s["live"] and i not in done and i not in rejected:
                return False
        return True

    def run(self):
        self.t0 = time.time()
        fp, bp, sp = free_port(), free_port(), free_port()
        self.frontend, self.backend = "tcp://127.0.0.1:%d" % fp, "tcp://127.0.0.1:%d" % bp
        self.broker = Program(self, "broker", [self.exe["broker"], "--frontend", self.frontend,
                                               "--backend", self.backend] + self.fast + self.log_level)
        self.broker.start()
        if not self.broker_up():
            sys.exit("soak: the broker did not start (see %s/broker.log)" % self.dir)
        addr_file = os.path.join(self.dir, "sink.addr")
        self.sink = Program(self, "sink", [self.exe["sink"], "--bind", "tcp://127.0.0.1:%d" % sp,
                                           "--broker", self.frontend, "--secret-file",
                                           os.path.join(self.dir, "sink.key"), "--endpoint-file", addr_file],
                            stdout_path=os.path.join(self.dir, "sink.jsonl"))
        self.sink.start()
        for _ in range(100):
            if os.path.exists(addr_file) and open(addr_file).read().endswith("\n"):
                break
            time.sleep(0.1)
        self.sink_address = open(addr_file).read().strip()
        w = [self.exe["worker"], "--broker", self.backend] + self.fast + self.log_level
        self.worker_programs = [
            Program(self, "worker-solo", w + ["--pool", "solo"]),
            Program(self, "worker-threads", w + ["--pool", "threads", "-c", "3"]),
            Program(self, "worker-processes", w + ["--pool", "processes", "-c", "3"]),
        ]
        self.pool = self.worker_programs[2]
        for p in self.worker_programs:
            p.start()
        self.restart_at = {}
        self.live = Program(self, "live-producer", [self.exe["producer"], "--broker", self.frontend] + self.fast +
                            ["submit"], stdin=subprocess.PIPE,
                            stdout_path=os.path.join(self.dir, "live.jsonl"), restart=False)
        self.live.start()
        feeder = threading.Thread(target=self.feed_live, daemon=True)
        feeder.start()
        self.log("started: broker %s sink %s" % (self.frontend, self.sink_address.split("?")[0]))

        end = self.t0 + self.args.seconds
        self.next_restart_ok = self.t0 + min(self.args.restart_every, self.args.seconds / 3)
        next_batch = next_chaos = time.time()
        sink_lines = LineCounter(os.path.join(self.dir, "sink.jsonl"))
        while time.time() < end:
            now = time.time()
            self.resume_due()
            self.check_processes()
            if now >= next_batch and self.detached_recorded - sink_lines.count() < MAX_OUTSTANDING:
                self.new_detached_batch()
                next_batch = now + self.rng.uniform(0.5, 2.5)
            if now >= next_chaos:
                self.chaos_step()
                next_chaos = time.time() + self.rng.uniform(0.2, 1.2) / self.args.chaos
            time.sleep(0.05)

        # Drain: no more chaos or tasks; everything resumed and running again.
        self.log("drain")
        self.stop_feeding.set()
        self.resume_due(everything=True)
        feeder.join(30)
        for w in self.worker_programs:
            if not w.alive():
                self.restart_at.setdefault(w.name, time.time())
        drain_end = time.time() + self.args.drain
        while time.time() < drain_end and not self.all_done():
            self.check_processes()
            time.sleep(0.25)
        self.log("drained" if self.all_done() else "drain timed out")
        time.sleep(1.0)  # late duplicates, if any, reach the files
        for p in [self.live] + self.detached + self.worker_programs + [self.sink, self.broker]:
            p.terminate()
        with open(os.path.join(self.dir, "events.json"), "w") as f:
            json.dump(self.events, f)
        self.submitted.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("seconds", type=float, nargs="?", default=300)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--dir", help="run directory (default: a new one under /tmp)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--drain", type=float, default=120, help="seconds to wait for the last outcomes")
    ap.add_argument("--restart-every", type=float, default=25, help="at most one broker restart in this many s")
    ap.add_argument("--chaos", type=float, default=1.0, help="chaos rate multiplier")
    ap.add_argument("--keep", action="store_true", help="keep the run directory even if the ledger is clean")
    ap.add_argument("--check", metavar="DIR", help="only check the ledger of an earlier run's directory")
    ap.add_argument("--log-level", default="info", help="the broker's and workers' (debug: a line a task)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.check:
        sys.exit(0 if report(args.check) else 1)
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    made_dir = args.dir is None
    if made_dir:
        args.dir = tempfile.mkdtemp(prefix="drover-soak-")
    os.makedirs(args.dir, exist_ok=True)
    print("soak: %g s of chaos, seed %d, run directory %s" % (args.seconds, args.seed, args.dir), file=sys.stderr)
    soak = Soak(args)
    try:
        soak.run()
    finally:
        for p in [getattr(soak, n, None) for n in ("live", "sink", "broker")] + \
                 getattr(soak, "worker_programs", []) + soak.detached:
            if p is not None and p.alive():
                soak.resume_due(everything=True)
                os.killpg(p.proc.pid, signal.SIGKILL)
    ok = report(args.dir)
    if ok and made_dir and not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    elif not ok:
        print("soak: FAILED; logs and ledger files in %s (re-check with --check DIR)" % args.dir, file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
