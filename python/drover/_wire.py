"""The DRV4 wire protocol: headers, message bodies and task proofs.

The specification is docs/protocol.md. Every encoder here writes the same
bytes as the C++ encoders (common/src/protocol.cpp): fields in the same order,
fields at their defaults left out, so that the golden vectors in
tests/vectors/protocol.json hold for both. Decoders are lenient as the C++
ones are: unknown fields are ignored, a missing field takes its default.
Nothing here does I/O; everything is safe to call from any thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
from dataclasses import dataclass

import msgpack

PROTOCOL = b"DRV4"
HEADER_SIZE = 5
DEFAULT_MAX_ATTEMPTS = 3
SECRET_BYTES = 16
# The error of a `cancelled` outcome the broker made because the task's
# producer went silent: a producer that gets it submits the task again.
PRODUCER_GONE = "producer gone"
STATUSES = ("ok", "error", "timeout", "lost", "cancelled", "rejected")


class Command(enum.IntEnum):
    HELLO = 0x01
    READY = 0x02
    DISPATCH = 0x03
    HEARTBEAT = 0x04
    BYE = 0x05
    RESET = 0x06
    LOST = 0x07
    RETRY = 0x08
    RETURN = 0x0B
    SUBMIT = 0x10
    ACCEPTED = 0x11
    REJECTED = 0x12
    SETTLE = 0x13
    CANCEL = 0x14
    STATUS = 0x15
    STATUS_REPLY = 0x16
    SETTLED = 0x17
    RESULT = 0x20
    ERROR = 0x7F


class ProtocolError(ValueError):
    """A frame that is not a DRV4 message; `reason` is the C++ decode error name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


_HEADERS = {c: PROTOCOL + bytes([c]) for c in Command}
_COMMANDS = {h: c for c, h in _HEADERS.items()}


def header(command: Command) -> bytes:
    """The 5-byte header frame of `command`."""
    return _HEADERS[command]


def parse_header(frame: bytes) -> Command:
    """The command of a header frame. Raises ProtocolError (bad_header,
    wrong_version, unknown_command). An ERROR of any version ("DRV?" + 0x7F)
    is Command.ERROR."""
    command = _COMMANDS.get(bytes(frame))
    if command is not None:
        return command
    frame = bytes(frame)
    if len(frame) != HEADER_SIZE or not frame.startswith(b"DRV"):
        raise ProtocolError("bad_header", f"not a drover header: {frame[:8]!r}")
    if frame[4] == Command.ERROR:
        return Command.ERROR
    if frame[:4] != PROTOCOL:
        raise ProtocolError("wrong_version", f"peer speaks {frame[:4].decode('ascii', 'replace')}, not DRV4")
    raise ProtocolError("unknown_command", f"command byte 0x{frame[4]:02x}")


def pack(body: dict) -> bytes:
    """A body's bytes. A str read by unpack() from bytes that are not UTF-8 (surrogate
    escapes) is written back as those same bytes."""
    return msgpack.packb(body, use_bin_type=True, unicode_errors="surrogateescape")


def unpack(body: bytes) -> dict:
    """A body as a dict; an empty body is {}. Raises ProtocolError(bad_body)."""
    if not body:
        return {}
    try:
        value = msgpack.unpackb(body, raw=False, unicode_errors="surrogateescape", strict_map_key=False)
    except msgpack.ExtraData as e:
        raise ProtocolError("trailing_bytes", str(e)) from None
    except (ValueError, TypeError, msgpack.UnpackException) as e:  # TypeError: a map key that is an array or map
        raise ProtocolError("bad_body", str(e)) from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_body", f"a body is a map, not {type(value).__name__}")
    return value


# Tasks and outcomes ------------------------------------------------------


@dataclass(slots=True)
class Task:
    id: str
    name: str
    args: bytes = b""  # msgpack bytes: an array with one item per parameter, or b"" for none
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_ms: int = 0
    reply_to: str = ""
    detached: bool = False
    retry_on_error: bool = False
    secret: bytes = b""  # SUBMIT only
    token: int = 0  # DISPATCH only
    start: bool = False  # DISPATCH only


@dataclass(slots=True)
class Outcome:
    id: str
    status: str = "ok"
    task: str = ""
    result: bytes = b""  # msgpack bytes when status is "ok"
    error: str = ""
    attempt: int = 0
    worker: str = ""
    elapsed_us: int = 0
    token: int = 0


def task_body(t: Task, batch_reply_to: str) -> dict:
    d = {"id": t.id, "name": t.name}
    if t.args:
        d["args"] = t.args
    if t.attempt:
        d["attempt"] = t.attempt
    if t.max_attempts != DEFAULT_MAX_ATTEMPTS:
        d["max_attempts"] = t.max_attempts
    if t.timeout_ms:
        d["timeout_ms"] = t.timeout_ms
    if t.reply_to != batch_reply_to:
        d["reply_to"] = t.reply_to
    if t.detached:
        d["detached"] = True
    if t.retry_on_error:
        d["retry_on_error"] = True
    if t.secret:
        d["secret"] = t.secret
    if t.token:
        d["token"] = t.token
    if t.start:
        d["start"] = True
    return d


def _shared(values) -> str:
    """The batch value: the first item's, or "" if some item has none."""
    values = list(values)
    if not values or not all(values):
        return ""
    return values[0]


def encode_tasks(tasks: list[Task]) -> bytes:
    """A SUBMIT or DISPATCH body: {tasks: [Task], reply_to: str}."""
    shared = _shared(t.reply_to for t in tasks)
    body = {"tasks": [task_body(t, shared) for t in tasks]}
    if shared:
        body["reply_to"] = shared
    return pack(body)


def outcome_body(o: Outcome, batch_worker: str) -> dict:
    d = {"id": o.id}
    if o.task:
        d["task"] = o.task
    d["status"] = o.status
    if o.result:
        d["result"] = o.result
    if o.error:
        d["error"] = o.error
    if o.attempt:
        d["attempt"] = o.attempt
    if o.worker != batch_worker:
        d["worker"] = o.worker
    if o.elapsed_us:
        d["elapsed_us"] = o.elapsed_us
    if o.token:
        d["token"] = o.token
    return d


def encode_results(outcomes: list[Outcome]) -> bytes:
    """A RESULT body: {results: [Outcome], worker: str}."""
    shared = _shared(o.worker for o in outcomes)
    body = {"results": [outcome_body(o, shared) for o in outcomes]}
    if shared:
        body["worker"] = shared
    return pack(body)


_UINT32 = (1 << 32) - 1
_UINT64 = (1 << 64) - 1


def _uint(d: dict, key: str, default: int = 0, top: int = _UINT32) -> int:
    v = d.get(key, default)
    if type(v) is not int or v < 0 or v > top:
        raise ProtocolError("bad_body", f"field '{key}': expected an unsigned integer, got {v!r}")
    return v


def _str(d: dict, key: str) -> str:
    v = d.get(key, "")
    if type(v) is not str:
        raise ProtocolError("bad_body", f"field '{key}': expected a string, got {type(v).__name__}")
    return v


def _bytes(d: dict, key: str) -> bytes:
    v = d.get(key, b"")
    if type(v) is str:  # the C++ decoders take str or bin for bytes fields
        return v.encode("utf-8", "surrogateescape")
    if type(v) is not bytes:
        raise ProtocolError("bad_body", f"field '{key}': expected bytes, got {type(v).__name__}")
    return v


def _bool(d: dict, key: str) -> bool:
    v = d.get(key, False)
    if type(v) is not bool:
        raise ProtocolError("bad_body", f"field '{key}': expected a boolean, got {type(v).__name__}")
    return v


def _list(d: dict, key: str, required: bool = True) -> list:
    if key not in d:
        if required:
            raise ProtocolError("bad_body", f"field '{key}' is missing")
        return []
    v = d[key]
    if type(v) is not list:
        raise ProtocolError("bad_body", f"field '{key}': expected an array, got {type(v).__name__}")
    return v


def _strings(d: dict, key: str, required: bool = True) -> list[str]:
    v = _list(d, key, required)
    if not all(type(s) is str for s in v):
        raise ProtocolError("bad_body", f"field '{key}': expected an array of strings")
    return v


def decode_tasks(body: bytes) -> list[Task]:
    """A DISPATCH (or SUBMIT) body; each task without a reply_to takes the batch's."""
    d = unpack(body)
    shared = _str(d, "reply_to")
    out = []
    for t in _list(d, "tasks"):
        if type(t) is not dict:
            raise ProtocolError("bad_body", "a task is not a map")
        out.append(Task(id=_str(t, "id"), name=_str(t, "name"), args=_bytes(t, "args"),
                        attempt=_uint(t, "attempt"),
                        max_attempts=_uint(t, "max_attempts", DEFAULT_MAX_ATTEMPTS),
                        timeout_ms=_uint(t, "timeout_ms"), reply_to=_str(t, "reply_to") or shared,
                        detached=_bool(t, "detached"), retry_on_error=_bool(t, "retry_on_error"),
                        secret=_bytes(t, "secret"), token=_uint(t, "token", top=_UINT64),
                        start=_bool(t, "start")))
        if not out[-1].id:
            raise ProtocolError("bad_body", "a task without an id")
    return out


def decode_results(body: bytes) -> list[Outcome]:
    """A RESULT body; each outcome without a worker takes the batch's."""
    d = unpack(body)
    shared = _str(d, "worker")
    out = []
    for o in _list(d, "results"):
        if type(o) is not dict:
            raise ProtocolError("bad_body", "an outcome is not a map")
        status = _str(o, "status")
        if status not in STATUSES:
            raise ProtocolError("bad_body", f"field 'status': unknown status {status!r}")
        out.append(Outcome(id=_str(o, "id"), status=status, task=_str(o, "task"), result=_bytes(o, "result"),
                           error=_str(o, "error"), attempt=_uint(o, "attempt"), worker=_str(o, "worker") or shared,
                           elapsed_us=_uint(o, "elapsed_us", top=_UINT64), token=_uint(o, "token", top=_UINT64)))
    return out


# Other bodies ------------------------------------------------------------


def encode_hello(worker: str, host: str, pid: int, pool: str, slots: int, tasks: list[str], restarts: int = 0,
                 max_message_bytes: int = 0, held: int = 0, lost_key: bytes = b"") -> bytes:
    """lost_key: a supervisor's child gives the key its supervisor's LOST will carry."""
    d = {"worker": worker, "host": host, "pid": pid, "pool": pool, "slots": slots, "tasks": list(tasks),
         "restarts": restarts, "max_message_bytes": max_message_bytes}
    if held:
        d["held"] = held
    if lost_key:
        d["lost_key"] = lost_key
    return pack(d)


def encode_ready(credits: int, starts: int = 0, run_ns: dict[str, int] | None = None) -> bytes:
    d = {"credits": credits}
    if starts:
        d["starts"] = starts
    if run_ns:
        d["run_ns"] = dict(run_ns)
    return pack(d)


def encode_ids(ids: list[str]) -> bytes:
    """ACCEPTED, SETTLED, CANCEL, RETRY, RETURN, a worker's BYE."""
    return pack({"ids": list(ids)})


def decode_ids(body: bytes, required: bool = True) -> list[str]:
    return _strings(unpack(body), "ids", required)


def encode_settle(ids: list[str], timed_out: int = 0, proofs: list[int] | None = None) -> bytes:
    d = {"ids": list(ids), "timed_out": timed_out}
    if proofs:
        d["proofs"] = b"".join(p.to_bytes(8, "little") for p in proofs)
    return pack(d)


def decode_rejected(body: bytes) -> tuple[list[str], str]:
    d = unpack(body)
    return _strings(d, "ids"), _str(d, "reason")


def encode_rejected(ids: list[str], reason: str) -> bytes:
    return pack({"ids": list(ids), "reason": reason})


def encode_heartbeat(instance: str | None = None, held: int | None = None) -> bytes:
    """A broker's HEARTBEAT to producers names its instance; a worker's says what it holds."""
    if instance is not None:
        return pack({"instance": instance})
    if held is not None:
        return pack({"held": held})
    return pack({})


def decode_heartbeat(body: bytes) -> dict:
    d = unpack(body)
    if "instance" in d:
        _str(d, "instance")
    return d


def encode_lost(worker: str, key: bytes = b"") -> bytes:
    """key: the lost_key of the worker's HELLO; the broker refuses a LOST without it."""
    d = {"worker": worker}
    if key:
        d["key"] = key
    return pack(d)


def encode_error(reason: str, detail: str = "", command: int | None = None) -> bytes:
    d = {"reason": reason, "detail": detail}
    if command is not None:
        d["command"] = command
    d["protocol"] = PROTOCOL.decode()
    return pack(d)


# Task secrets, attempt tokens and settle proofs (docs/protocol.md) ---------

def _load_sodium() -> ctypes.CDLL:
    """libsodium, which libzmq's CURVE already uses (Debian: libsodium23)."""
    name = ctypes.util.find_library("sodium") or "libsodium.so.23"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise ImportError(f"drover needs libsodium ({name}): {e}; on Debian: apt-get install libsodium23") from None
    if lib.sodium_init() < 0:
        raise ImportError("libsodium cannot start (no entropy source?)")
    for fn in (lib.crypto_shorthash, lib.crypto_shorthash_siphashx24):
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p]
        fn.restype = ctypes.c_int
    return lib


_SODIUM = _load_sodium()


def random_secret() -> bytes:
    """A fresh 16-byte sink key."""
    return os.urandom(SECRET_BYTES)


def task_secret(sink_key: bytes, task_id: str) -> bytes:
    """SipHashX-2-4 (128-bit) of the id's UTF-8 bytes under the sink's key."""
    message = task_id.encode("utf-8", "surrogateescape")
    out = ctypes.create_string_buffer(16)
    key = sink_key if len(sink_key) == SECRET_BYTES else _ZERO_KEY
    _SODIUM.crypto_shorthash_siphashx24(out, message, len(message), key)
    return out.raw


_ZERO_KEY = bytes(SECRET_BYTES)


def _keyed(secret: bytes, domain: int, n: int) -> int:
    """SipHash-2-4 of a domain byte and n (little-endian 32-bit) under a task's
    secret; a secret of the wrong size hashes under zeros, as in C++."""
    key = secret if len(secret) == SECRET_BYTES else _ZERO_KEY
    message = bytes((domain, n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF, (n >> 24) & 0xFF))
    out = ctypes.create_string_buffer(8)
    _SODIUM.crypto_shorthash(out, message, 5, key)
    return int.from_bytes(out.raw, "little")


def attempt_token(secret: bytes, attempt: int) -> int:
    """The token a worker shows for this attempt: SipHash-2-4 of 'a' + attempt (LE32)."""
    return _keyed(secret, ord("a"), attempt)


def broker_token(secret: bytes, attempt: int) -> int:
    """The token of an outcome the broker made: SipHash-2-4 of 'b' + attempt (LE32)."""
    return _keyed(secret, ord("b"), attempt)


def settle_proof(secret: bytes) -> int:
    """What a standalone sink shows to SETTLE a task: SipHash-2-4 of 's' + 0 (LE32)."""
    return _keyed(secret, ord("s"), 0)


def genuine(secret: bytes, outcome: Outcome) -> bool:
    """Whether the outcome's token proves it came from the attempt's worker or the broker."""
    if outcome.worker == "broker":
        return outcome.token == broker_token(secret, outcome.attempt)
    return outcome.token == attempt_token(secret, outcome.attempt)


# The producer's hot path ------------------------------------------------
# The same bytes and the same proofs as the functions above, at a fraction
# of their cost: SipHash without per-call allocations or GIL release, and
# SUBMIT tasks written from cached pieces.

# The same libsodium as _SODIUM, through ctypes.PyDLL, which keeps the GIL
# during a call: a SipHash is a few hundred ns, and a release would hand the
# GIL to a busy thread (a caller submitting) for a whole switch interval.
_SODIUM_KEEPING_GIL = ctypes.PyDLL(_SODIUM._name)
for _fn in (_SODIUM_KEEPING_GIL.crypto_shorthash, _SODIUM_KEEPING_GIL.crypto_shorthash_siphashx24):
    _fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p]
    _fn.restype = ctypes.c_int
_ATTEMPT_MESSAGES = [(bytes((ord("a"), n, 0, 0, 0)), bytes((ord("b"), n, 0, 0, 0))) for n in range(256)]


class Prover:
    """task_secret and the attempt and broker tokens under one sink key, at a
    fraction of their cost (buffers made once, the GIL kept). Its buffers are
    its own: use one Prover from one thread only."""

    def __init__(self, sink_key: bytes):
        if len(sink_key) != SECRET_BYTES:
            raise ValueError(f"a sink key is {SECRET_BYTES} bytes")
        self.sink_key = bytes(sink_key)
        self._sx = _SODIUM_KEEPING_GIL.crypto_shorthash_siphashx24
        self._s24 = _SODIUM_KEEPING_GIL.crypto_shorthash
        self._out16 = ctypes.create_string_buffer(16)
        self._out8 = ctypes.c_uint64()
        self._out8_ref = ctypes.byref(self._out8)

    def secret(self, task_id: str) -> bytes:
        """task_secret(sink_key, task_id)."""
        m = task_id.encode("utf-8", "surrogateescape")
        self._sx(self._out16, m, len(m), self.sink_key)
        return self._out16.raw

    def token(self, secret: bytes, by_broker: bool, attempt: int) -> int:
        """broker_token(secret, attempt) if by_broker, else attempt_token(secret, attempt).
        Raises OverflowError or TypeError for an attempt that is not a uint32."""
        if len(secret) != SECRET_BYTES:
            return broker_token(secret, attempt) if by_broker else attempt_token(secret, attempt)
        if 0 <= attempt < 256:
            m = _ATTEMPT_MESSAGES[attempt][by_broker]
        else:
            m = (b"b" if by_broker else b"a") + attempt.to_bytes(4, "little")
        self._s24(self._out8_ref, m, 5, secret)
        return self._out8.value


class TaskEncoder:
    """SUBMIT bodies from pre-encoded tasks: byte for byte what encode_tasks
    writes for tasks that share the batch's reply_to. One thread only (its
    msgpack packer is its own)."""

    def __init__(self):
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._parts: dict[tuple, tuple[bytes, bytes, bytes]] = {}

    def _pieces(self, name: str, has_args: bool, max_attempts: int, timeout_ms: int,
                retry_on_error: bool) -> tuple[bytes, bytes, bytes]:
        key = (name, has_args, max_attempts, timeout_ms, retry_on_error)
        pieces = self._parts.get(key)
        if pieces is None:
            pk = self._pack
            fields = 3 + has_args + (max_attempts != DEFAULT_MAX_ATTEMPTS) + (timeout_ms != 0) + retry_on_error
            head = bytes((0x80 | fields,)) + pk("id")
            middle = pk("name") + pk(name) + (pk("args") if has_args else b"")
            tail = b""
            if max_attempts != DEFAULT_MAX_ATTEMPTS:
                tail += pk("max_attempts") + pk(max_attempts)
            if timeout_ms:
                tail += pk("timeout_ms") + pk(timeout_ms)
            if retry_on_error:
                tail += pk("retry_on_error") + pk(True)
            tail += pk("secret") + b"\xc4\x10"
            pieces = (head, middle, tail)
            if len(self._parts) > 4096:
                self._parts.clear()
            self._parts[key] = pieces
        return pieces

    def task(self, task_id: str, name: str, args: bytes, secret: bytes, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             timeout_ms: int = 0, retry_on_error: bool = False) -> bytes:
        """One task of a SUBMIT (msgpack map); `secret` must be 16 bytes."""
        head, middle, tail = self._pieces(name, bool(args), max_attempts, timeout_ms, retry_on_error)
        pk = self._pack
        if args:
            return head + pk(task_id) + middle + pk(args) + tail + secret
        return head + pk(task_id) + middle + tail + secret

    def submit(self, tasks: list[bytes], reply_to: str) -> bytes:
        """A SUBMIT body of tasks from task(), all answering to `reply_to` (non-empty)."""
        n = len(tasks)
        if n < 16:
            count = bytes((0x90 | n,))
        elif n < 65536:
            count = b"\xdc" + n.to_bytes(2, "big")
        else:
            count = b"\xdd" + n.to_bytes(4, "big")
        return b"\x82\xa5tasks" + count + b"".join(tasks) + b"\xa8reply_to" + self._pack(reply_to)
