"""A task function as a worker calls it: its arguments read from msgpack (strings converted for
parameters annotated int, float or bool), its result packed, and its failure told as an outcome's
error. Used by worker.py (registration) and _worker_loop.py (running)."""

from __future__ import annotations

import inspect

import msgpack


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
