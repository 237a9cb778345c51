"""python -m drover submit|map: drover-producer's JSON lines, from Python.

The line formats are drover-producer's (README.md, "JSON formats"), so that a
script can switch between the two: `submit` reads task lines on stdin and
prints result lines as outcomes arrive; `map TASK ARG...` prints each result
as one JSON value a line, in input order, `null` and a line on stderr for a
task that did not end ok. Exit status: 0 only if every task ended ok, 1
otherwise or when no broker answers, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import shlex
import sys
import threading
import time

import msgpack

from . import __version__
from ._security import SecurityError
from ._wire import PROTOCOL
from .client import BrokerUnavailable, Client, _MapRun

MAX_DEPTH = 256  # the C++ side's k_max_data_depth
TASK_FIELDS = ("task", "args", "id", "max_attempts", "timeout_ms", "retry_on_error")
PROG = "drover"


class InputError(ValueError):
    """A task line or a map argument that cannot be a task; the message says why."""


# JSON <-> msgpack, as drover-producer reads and prints them ---------------------------


def within_depth(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether no array or object in the JSON text nests deeper than `limit` (brackets in strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return False
        elif c in "]}" and depth:
            depth -= 1
    return True


def _parse_int(s: str):
    n = int(s)
    return n if -(1 << 63) <= n < (1 << 64) else float(n)  # past 64 bits a JSON number is a double


def _parse_float(s: str) -> float:
    f = float(s)
    if math.isinf(f):
        raise InputError(f"number overflow parsing '{s}'")
    return f


def _refuse_constant(s: str):
    raise InputError(f"invalid literal '{s}'")


def parse_json(text: str):
    """A JSON value, numbers as drover-producer reads them. Raises InputError."""
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e}") from None
    except InputError as e:
        raise InputError(f"invalid JSON: {e}") from None


def _whole(value):
    """Whole floats as integers, as the C++ side packs JSON numbers (1e3 is 1000)."""
    t = type(value)
    if t is float:
        if value.is_integer() and -(1 << 63) <= value < (1 << 64):
            return int(value)
        return value
    if t is list:
        return [_whole(v) for v in value]
    if t is dict:
        return {k: _whole(v) for k, v in value.items()}
    return value


def pack_json(value) -> bytes:
    return msgpack.packb(_whole(value), use_bin_type=True)


class _TooDeep(ValueError):
    pass


def _jsonable(value, depth: int = 0):
    """A decoded result as JSON values: bytes as nlohmann prints binary data, non-finite floats as null.
    Raises ValueError for what JSON cannot hold (a map key that is not a string), _TooDeep past MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise _TooDeep()
    t = type(value)
    if t is float:
        return value if math.isfinite(value) else None
    if t is bytes:
        return {"bytes": list(value), "subtype": None}
    if t is list or t is tuple:
        return [_jsonable(v, depth + 1) for v in value]
    if t is dict:
        if not all(type(k) is str for k in value):
            raise ValueError("a map key that is not a string")
        return {k: _jsonable(v, depth + 1) for k, v in value.items()}
    if value is None or t in (bool, int, str):
        return value
    raise ValueError(f"no JSON for {t.__name__}")


def to_line(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def result_json(raw: bytes):
    """msgpack result bytes as a JSON value: null if empty, a string saying so if undecodable."""
    if not raw:
        return None
    if type(raw) is str:
        raw = raw.encode("utf-8", "surrogateescape")
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False, unicode_errors="replace")
    except Exception:
        return "<undecodable result>"
    try:
        return _jsonable(value)
    except (_TooDeep, RecursionError):
        return f"<result nested deeper than {MAX_DEPTH} levels (limit)>"
    except ValueError:
        return "<undecodable result>"


def result_line(o: dict, worker: str, name: str, tid: str, id_value, has_id: bool) -> str:
    """A submit result line: {"attempts","elapsed_ms","error"|"result","id","status","task","worker"}."""
    d = {"attempts": o.get("attempt", 0), "elapsed_ms": round(o.get("elapsed_us", 0) / 1000.0, 3),
         "id": id_value if has_id else tid, "status": o["status"], "task": o.get("task") or name, "worker": worker}
    if o["status"] == "ok":
        d["result"] = result_json(o.get("result", b""))
    else:
        d["error"] = o.get("error", "")
    return to_line(d)


def rejected_line(line_no: int, error: str, id_value, has_id: bool) -> str:
    d = {"error": error, "line": line_no, "status": "rejected"}
    if has_id:
        d["id"] = id_value
    return to_line(d)


def parse_task_line(line: str) -> tuple:
    """(task, packed args, (max_attempts, timeout_ms, retry_on_error) with None for absent, id value,
    has_id). Raises InputError with drover-producer's reasons."""
    if not within_depth(line):
        raise InputError(f"task line nested deeper than {MAX_DEPTH} levels (limit)")
    j = parse_json(line)
    if type(j) is not dict:
        raise InputError('a task line must be a JSON object like {"task":"hello","args":["world"]}')
    for key in sorted(j):
        if key not in TASK_FIELDS:
            raise InputError(f'unknown field "{key}" (a task line has {", ".join(TASK_FIELDS)})')
    has_id = j.get("id") is not None
    task = j.get("task")
    if type(task) is not str or not task:
        raise InputError('missing "task" (a non-empty string)')
    options = []
    for key in ("max_attempts", "timeout_ms"):
        v = j.get(key)
        if v is not None and (type(v) is not int or not 0 <= v <= 0xFFFFFFFF):
            raise InputError(f'"{key}" must be a non-negative integer')
        options.append(v)
    if options[0] == 0:
        raise InputError('"max_attempts" must be at least 1')
    retry = j.get("retry_on_error")
    if retry is not None and type(retry) is not bool:
        raise InputError('"retry_on_error" must be true or false')
    try:
        args = pack_json(j.get("args", []))
    except (OverflowError, ValueError) as e:
        raise InputError(f"arguments: {e}") from None
    return task, args, (options[0], options[1], retry), j.get("id"), has_id


def map_arg(word: str, which: str):
    """A map ARG as its value: the word itself, or JSON if it begins with [ { or "."""
    if not word or word[0] not in '[{"':
        return word
    if not within_depth(word, MAX_DEPTH - 1):
        raise InputError(f"{which} nests deeper than {MAX_DEPTH - 1} levels")
    try:
        return parse_json(word)
    except InputError:
        raise InputError(f"{which} begins with {word[0]} but is not JSON: {word[:80]} (quote it as a JSON "
                         f"string, e.g. '\"[x\"', to send it as text)") from None


def split_words(line: str) -> list[str]:
    """A line's words as a POSIX shell splits them, without expansions. Raises InputError."""
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError as e:
        what = str(e)
        if "quotation" in what:
            quote = "'" if line.count("'") % 2 else '"'
            what = f"unterminated {quote} quote"
        elif "escape" in what:
            what = "trailing \\ (it escapes nothing)"
        raise InputError(what) from None


# Output -------------------------------------------------------------------------------------


class Output:
    """Lines for stdout, written in batches, and at once while the input is waited for. Lines may be
    added from any thread (the client's I/O thread adds submit's result lines)."""

    def __init__(self):
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.out = sys.stdout.buffer

    def add(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def flush(self, when_over: int = 0) -> None:
        if len(self.lines) <= when_over:
            return
        with self.lock:
            lines, self.lines = self.lines, []
        self.out.write(("\n".join(lines) + "\n").encode("utf-8", "replace"))
        self.out.flush()


def say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


# submit ---------------------------------------------------------------------------------


class SubmitRun:
    """submit's tasks by line: the I/O thread hands each outcome to put(), which prints its line."""

    def __init__(self, output: Output):
        self.output = output
        self.ids: dict[int, tuple] = {}  # line number -> (id value, has_id)
        self.total = 0
        self.failed_tasks = 0  # counted by the I/O thread
        self.failed_lines = 0  # counted by the reading thread

    def put(self, slot: int, o: dict, worker: str, name: str, tid: str) -> None:
        id_value, has_id = self.ids.pop(slot)
        if o["status"] != "ok":
            self.failed_tasks += 1
        self.output.add(result_line(o, worker, name, tid, id_value, has_id))

    def reject(self, line_no: int, error: str, id_value=None, has_id: bool = False) -> None:
        self.failed_lines += 1
        self.output.add(rejected_line(line_no, error, id_value, has_id))
        say(f"line {line_no}: {error}")


def read_lines(fd: int, into: queue.Queue) -> None:
    """Reads `fd` to its end, putting lists of lines (bytes, without '\\n'), then None (a thread)."""
    rest = b""
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            if lines:
                into.put(lines)
    except OSError as e:
        say(f"reading input: {e}")
    if rest:
        into.put([rest])
    into.put(None)


def submit_line(client: Client, a, run: SubmitRun, raw: bytes, line_no: int) -> None:
    try:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"invalid JSON: invalid UTF-8: {e}") from None
        task, args, (max_attempts, timeout_ms, retry), id_value, has_id = parse_task_line(text)
    except InputError as e:
        run.reject(line_no, str(e))
        return
    timeout_ms = timeout_ms or a.timeout_ms
    opts = client._opts(timeout_ms / 1000 if timeout_ms else None, max_attempts, True if a.retry_on_error else retry)
    run.ids[line_no] = (id_value, has_id)
    try:
        client._add(task, args, opts, run, line_no, None)
        run.total += 1
    except ValueError as e:  # arguments past --max-message-bytes
        run.ids.pop(line_no, None)
        run.reject(line_no, str(e), id_value, has_id)


def run_submit(client: Client, a) -> int:
    output = Output()
    run = SubmitRun(output)
    lines: queue.Queue = queue.Queue(maxsize=16)
    threading.Thread(target=read_lines, args=(sys.stdin.fileno(), lines), daemon=True).start()
    line_no = 0
    while True:
        try:
            batch = lines.get(timeout=0.05)
        except queue.Empty:
            output.flush()  # waiting for input: what came so far is written
            continue
        if batch is None:
            break
        for raw in batch:
            line_no += 1
            if raw.strip(b" \t\r"):
                submit_line(client, a, run, raw, line_no)
        output.flush(when_over=1000)
    while not client.wait_all(0.05):
        output.flush()
    output.flush()
    report_forged(client)
    return 0 if run.failed_tasks + run.failed_lines == 0 else 1


def report_forged(client: Client) -> None:
    n = client.stats().get("forged", 0)
    if n:
        say(f"dropped {n} forged outcomes (without their attempt's token)")


# map ------------------------------------------------------------------------------------


def map_tasks(a):
    """map's tasks in input order: (arguments as JSON values, or the line; why it cannot run, or "")."""
    if a.args_from or a.args == ["-"]:
        f = open(a.args_from, "rb") if a.args_from else sys.stdin.buffer
        try:
            for line_no, raw in enumerate(f, 1):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                try:
                    words = split_words(line)
                    if not words:
                        continue  # a blank line is no task
                    yield [map_arg(w, f"argument {i}") for i, w in enumerate(words, 1)], ""
                except InputError as e:
                    yield line, f"line {line_no}: {e}"
        finally:
            if a.args_from:
                f.close()
        return
    for i, word in enumerate(a.args, 1):
        yield [map_arg(word, f"argument {i}")], ""


def describe(task: str, args) -> str:
    """'sum_random(1,"x")': a task and its arguments, for stderr."""
    text = to_line(args)
    return f"{task}({text[1:-1] if type(args) is list else text})"


def run_map(client: Client, a) -> int:
    opts = client._opts(a.timeout_ms / 1000 if a.timeout_ms else None, None, True if a.retry_on_error else None)
    window = a.window
    run = _MapRun()
    pending: dict[int, object] = {}  # slot -> its arguments, for stderr
    alive = client._thread.is_alive
    out = sys.stdout.buffer
    failed = not_run = 0
    halted = False

    def show(slot: int) -> None:
        nonlocal failed, not_run, halted
        o, worker, name, tid = run.take(slot, alive)
        args = pending.pop(slot)
        if o["status"] == "ok":
            out.write((to_line(result_json(o.get("result", b""))) + "\n").encode("utf-8", "replace"))
            return
        if o["status"] == "cancelled" and halted:
            not_run += 1
            return
        failed += 1
        out.write(b"null\n")
        out.flush()
        say(f"{describe(a.task, args)} {o['status']}: {o.get('error', '')}")
        if a.halt_on_error and not halted:
            halted = True
            client.cancel()  # queued tasks end cancelled; running ones finish

    sent = head = 0
    for args, error in map_tasks(a):
        if halted:
            break
        pending[sent] = args
        if error:
            run.put(sent, {"status": "rejected", "error": error}, "", a.task, "")
        else:
            try:
                client._add(a.task, pack_json(args), opts, run, sent, None)
            except (ValueError, OverflowError) as e:
                run.put(sent, {"status": "rejected", "error": str(e)}, "", a.task, "")
        sent += 1
        while sent - head >= window or (head < sent and head in run.done):
            if head not in run.done:
                out.flush()
            show(head)
            head += 1
    while head < sent:
        if head not in run.done:
            out.flush()
        show(head)
        head += 1
    out.flush()
    if halted:
        say(f"--halt-on-error: stopped submitting after a failure; {not_run} queued tasks cancelled")
    report_forged(client)
    return 0 if failed == 0 else 1


# The command line -----------------------------------------------------------------------------


def _positive_int(lo: int, hi: int):
    def parse(text: str) -> int:
        v = int(text)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} not in [{lo} - {hi}]")
        return v
    return parse


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "submit":
        what = "reads task JSON lines on stdin, writes result JSON lines to stdout (drover-producer submit)"
    else:
        what = ("runs TASK once per ARG and prints the results in input order (drover-producer map). An ARG is a "
                "string as written, or JSON if it begins with [ { or \"; a lone - reads tasks from stdin, one a "
                "line, its words (split on blanks, '...' and \"...\" quoting) the task's arguments")
    p = argparse.ArgumentParser(prog=f"python -m drover {command}", description=what)
    p.add_argument("--broker", default="tcp://127.0.0.1:5555", help="the broker's frontend endpoint")
    p.add_argument("--security", metavar="DIR", help="fleet directory (drover-keygen --fleet DIR): CurveZMQ")
    p.add_argument("--sink", help="where to bind the result sink (default: an ephemeral port)")
    p.add_argument("--sink-advertise", help="the sink endpoint given to workers as reply_to")
    p.add_argument("--window", type=_positive_int(1, 10_000_000), default=20000,
                   help="unfinished tasks before submitting pauses (default 20000)")
    p.add_argument("--queue-full-wait-ms", type=_positive_int(0, 86_400_000), default=30000,
                   help="how long tasks refused with queue_full are held back and sent again before they end "
                        "rejected (default 30000)")
    p.add_argument("--max-attempts", type=_positive_int(1, 1000), default=3,
                   help="default attempts for a task whose worker dies (default 3)")
    p.add_argument("--timeout-ms", type=_positive_int(0, 0xFFFFFFFF), default=0,
                   help="default task timeout (0: none)")
    p.add_argument("--retry-on-error", action="store_true", help="retry tasks that fail with an error too")
    p.add_argument("--heartbeat-ms", type=_positive_int(10, 600000), default=1000, help="heartbeat period")
    p.add_argument("--liveness", type=_positive_int(1, 1000), default=3,
                   help="missed heartbeats before the broker is presumed gone")
    p.add_argument("--connect-timeout-ms", "--connect-timeout", type=_positive_int(0, 1 << 31), default=10000,
                   help="give up (exit 1) if no broker answers within this (0: wait for ever)")
    p.add_argument("--wait-workers", type=_positive_int(0, 1 << 31), default=0,
                   help="wait until the broker has N workers before submitting")
    p.add_argument("--wait-timeout-ms", type=_positive_int(0, 1 << 31), default=30000,
                   help="how long --wait-workers waits")
    p.add_argument("--timing", action="store_true", help="print 'timing: tasks=N wall_ms=T' on stderr at the end")
    p.add_argument("--log-level", default="warn",
                   choices=["trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"])
    p.add_argument("--max-message-bytes", type=_positive_int(4096, 1 << 32), default=16 * 1024 * 1024,
                   help="largest message sent or accepted")
    p.add_argument("--version", action="version",
                   version=f"drover (python) {__version__} (protocol {PROTOCOL.decode()[3:]})")
    if command == "map":
        p.add_argument("task", help="task name")
        p.add_argument("args", nargs="*", metavar="ARG")
        p.add_argument("--args-from", metavar="FILE", help="read the tasks from this file, one a line, as for -")
        p.add_argument("--halt-on-error", action="store_true",
                       help="stop submitting after the first failure: queued tasks are cancelled; exit 1")
    return p


_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "err": logging.ERROR, "critical": logging.CRITICAL,
           "off": logging.CRITICAL + 10}


def check_args(command: str, a) -> None:
    """Raises InputError for what the parser cannot check."""
    if not (a.broker.startswith("tcp://") or a.broker.startswith("ipc://")):
        raise InputError(f"--broker {a.broker}: expected tcp://HOST:PORT or ipc://PATH")
    if command != "map":
        return
    if a.args_from and a.args:
        raise InputError("map: give ARGs or --args-from FILE, not both")
    if a.args_from and not os.path.isfile(a.args_from):
        raise InputError(f"--args-from: file does not exist: {a.args_from}")
    if a.args != ["-"]:
        for i, word in enumerate(a.args, 1):
            if word.startswith("--") and len(word) > 2:
                raise InputError(f"unknown option {word} (write an argument that begins with -- as JSON: '\"{word}\"')")
            map_arg(word, f"argument {i}")


def make_client(a) -> Client:
    return Client(a.broker, a.security, sink_bind=a.sink, advertise=a.sink_advertise, heartbeat=a.heartbeat_ms / 1000,
                  liveness=a.liveness, connect_timeout=a.connect_timeout_ms / 1000 or None, window=a.window,
                  max_attempts=a.max_attempts, timeout=a.timeout_ms / 1000 or None,
                  retry_on_error=a.retry_on_error, queue_full_wait=a.queue_full_wait_ms / 1000,
                  max_message_bytes=a.max_message_bytes)


def run(command: str, a) -> int:
    start = time.monotonic()
    try:
        client = make_client(a)
    except BrokerUnavailable:
        say(f"no broker answered at {a.broker} in {a.connect_timeout_ms} ms (is it running there, and reachable? "
            f"with --security, does this client have the fleet's keys, and is its key on the broker's allow-list?)")
        return 1
    try:
        if a.wait_workers and not client.wait_for_workers(a.wait_workers, a.wait_timeout_ms / 1000):
            say(f"fewer than {a.wait_workers} workers at {a.broker} after {a.wait_timeout_ms} ms")
            return 1
        status = run_map(client, a) if command == "map" else run_submit(client, a)
        tasks = client.stats().get("finished", 0)
    except KeyboardInterrupt:
        say(f"interrupted: cancelling {client.unfinished} unfinished tasks")
        client.close(cancel=True)
        return 130
    client.close(cancel=True)
    if a.timing:
        sys.stderr.write(f"timing: tasks={tasks} wall_ms={(time.monotonic() - start) * 1000:.3f}\n")
    return status


def main(command: str, argv: list[str]) -> int:
    """python -m drover submit|map [options]: returns the exit status."""
    parser = build_parser(command)
    try:
        a = parser.parse_intermixed_args(argv) if command == "map" else parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code in (0, None) else 2
    try:
        check_args(command, a)
    except InputError as e:
        say(str(e))
        return 2
    logging.basicConfig(level=_LEVELS[a.log_level], stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return run(command, a)
    except SecurityError as e:
        say(str(e))
        return 2
    except OSError as e:
        say(f"{e} (check --sink and --broker)")
        return 2
