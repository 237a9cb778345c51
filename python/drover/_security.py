"""CurveZMQ from a drover fleet directory (docs/security.md), as the C++ programs read it.

`Security.from_fleet(DIR, role)` reads the role's secret key (refused if
group or others may read it), the broker's public key and, for roles that
serve (a sink), the workers' allow-list. Client sockets pin a server key;
server sockets (a sink) need an authenticator admitting allowed keys.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.utils.z85

ROLE_FILES = {"producer": "producer", "sink": "producer", "worker": "worker", "broker": "broker"}
CURVE_MARKER = "?curve="


class SecurityError(RuntimeError):
    """A key file or fleet directory that cannot be used; the message says how to fix it."""


def _is_z85_key(word: str) -> bool:
    if len(word) != 40:
        return False
    try:
        return len(zmq.utils.z85.decode(word.encode("ascii"))) == 32
    except (ValueError, KeyError, UnicodeEncodeError):
        return False


def first_key(text: str) -> str | None:
    """The first 40-character Z85 word of a key file; lines starting with '#' are comments."""
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if _is_z85_key(words[0]):
            return words[0]
    return None


def read_secret_key(path: str | os.PathLike) -> tuple[str, str]:
    """(public, secret) Z85 keys from a secret key file. Raises SecurityError
    if it is missing, not a regular file, readable by others, or holds no key."""
    path = str(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise SecurityError(f"cannot read secret key file '{path}': {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecurityError(f"secret key file '{path}' is not a regular file")
    if st.st_mode & 0o077:
        raise SecurityError(f"secret key file '{path}' may be read by others (mode {st.st_mode & 0o7777:04o}): "
                            f"refused; run chmod 600 '{path}'")
    key = first_key(Path(path).read_text(errors="replace"))
    if key is None:
        raise SecurityError(f"secret key file '{path}' holds no 40-character Z85 key")
    return zmq.curve_public(key.encode()).decode(), key


def read_public_key(path: str | os.PathLike) -> str:
    try:
        key = first_key(Path(path).read_text(errors="replace"))
    except OSError as e:
        raise SecurityError(f"cannot read public key file '{path}': {e.strerror}") from None
    if key is None:
        raise SecurityError(f"public key file '{path}' holds no 40-character Z85 key")
    return key


def read_allow_list(path: str | os.PathLike) -> dict[str, str]:
    """Key -> name, from a directory of NAME.key files or a file of `KEY [NAME]` lines."""
    p = Path(path)
    out: dict[str, str] = {}
    if p.is_dir():
        for f in sorted(p.glob("*.key")):
            if f.is_file():
                out[read_public_key(f)] = f.stem
        return out
    try:
        text = p.read_text(errors="replace")
    except OSError as e:
        raise SecurityError(f"cannot read allow-list '{path}': {e.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if not _is_z85_key(words[0]):
            raise SecurityError(f"allow-list '{path}' line {n}: not a Z85 key")
        out[words[0]] = words[1] if len(words) > 1 else "key-" + words[0][:8]
    return out


def split_keyed_endpoint(text: str) -> tuple[str, str]:
    """("tcp://h:p", KEY) from "tcp://h:p?curve=KEY"; KEY is "" when none is named."""
    at = text.find(CURVE_MARKER)
    if at < 0:
        return text, ""
    return text[:at], text[at + len(CURVE_MARKER):]


@dataclass
class Security:
    """One program's CurveZMQ keys. `public`/`secret`: its own pair (Z85);
    `broker`: the broker's public key it pins; `allow_workers`: the keys a
    sink admits (the workers', plus the broker's)."""

    public: str
    secret: str
    broker: str
    allow_workers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_fleet(cls, directory: str | os.PathLike, role: str = "producer") -> "Security":
        """Reads DIR/<role>.key_secret, DIR/broker.key and (producer, sink) DIR/allow/workers."""
        if role not in ROLE_FILES:
            raise SecurityError(f"unknown role '{role}': one of {', '.join(ROLE_FILES)}")
        d = Path(directory)
        if not d.is_dir():
            raise SecurityError(f"fleet directory '{directory}' does not exist (make one with drover-keygen --fleet)")
        public, secret = read_secret_key(d / f"{ROLE_FILES[role]}.key_secret")
        broker = read_public_key(d / "broker.key")
        allow = {}
        if role in ("producer", "sink"):
            allow = read_allow_list(d / "allow" / "workers")
            allow[broker] = "broker"
        return cls(public=public, secret=secret, broker=broker, allow_workers=allow)

    def client(self, socket: zmq.Socket, server_key: str | None = None) -> None:
        """Makes `socket` a CURVE client of the broker (or of the server named by `server_key`)."""
        socket.curve_secretkey = self.secret.encode()
        socket.curve_publickey = self.public.encode()
        socket.curve_serverkey = (server_key or self.broker).encode()

    def server(self, socket: zmq.Socket, domain: str = "drover-sink") -> None:
        """Makes `socket` a CURVE server; admitting keys needs a ZAP handler on the context."""
        socket.curve_secretkey = self.secret.encode()
        socket.curve_publickey = self.public.encode()
        socket.curve_server = True
        socket.zap_domain = domain.encode()
