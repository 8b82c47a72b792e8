"""A record to one NDJSON line: orjson when importable, any value converted, long strings capped.

The common path is one `dumps` call and one length check; a value orjson does not know becomes its
`repr`. The record is walked only when the line is longer than `max_value_bytes` (only then can it hold a
string to cap) or when `dumps` refuses the record (an int beyond 64 bits, a lone surrogate, a tuple as a
dict key, a cycle, nesting past 254). The walk turns every value into plain JSON and cuts each string
longer than the cap, marking it `…[truncated N bytes]`, N counting the UTF-8 bytes cut.
"""

from __future__ import annotations

import datetime
import enum
import math
from typing import Any

__all__ = ["FAST_OPTIONS", "encode_record", "fast_dumps", "repr_default", "truncate_text"]

_MAX_DEPTH = 64  # deeper values (or cycles) become their repr


def repr_default(value: Any) -> str:
    """orjson's `default=`: any value it does not know becomes its repr."""
    try:
        return repr(value)
    except Exception:  # a broken _repr_default__ must not lose the record
        return f"<unrepresentable {type(value).__qualname__}>"


try:
    import orjson

    FAST_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
    _ANY_KEYS = FAST_OPTIONS | orjson.OPT_NON_STR_KEYS  # a quarter slower: only records that need it pay
    # The common path calls `fast_dumps(record, default=repr_default, option=FAST_OPTIONS)` directly (the
    # transport does, inline): a wrapper function would cost ~80 ns a span.
    fast_dumps = orjson.dumps

    def _dumps(record: Any, option: int = FAST_OPTIONS) -> bytes:
        return fast_dumps(record, default=repr_default, option=option)

except ImportError:  # pragma: no cover - the standard library fallback
    import json

    FAST_OPTIONS = _ANY_KEYS = 0
    _encoder = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=repr_default
    )

    def fast_dumps(record: Any, default: Any = None, option: int = 0) -> bytes:  # type: ignore[misc]
        return (_encoder.encode(record) + "\n").encode("utf-8")

    def _dumps(record: Any, option: int = 0) -> bytes:
        return fast_dumps(record)


def truncate_text(text: str, max_bytes: int) -> str:
    """`text` if it fits in `max_bytes` of UTF-8, else its head and `…[truncated N bytes]`, in the limit."""
    if len(text) * 4 <= max_bytes:  # cheap: no UTF-8 character is longer than 4 bytes
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return text
    room = max(0, max_bytes - len(f"…[truncated {len(raw)} bytes]".encode()))
    head = raw[:room].decode("utf-8", "ignore")  # "ignore" drops a character cut in half
    cut = len(raw) - len(head.encode("utf-8", "surrogatepass"))
    return f"{head}…[truncated {cut} bytes]"


class _Walk:
    """One pass that makes a value plain JSON and caps its strings; notes whether it changed anything."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.changed = False
        self.open: set[int] = set()  # ids of the containers being walked: a second visit is a cycle

    def text(self, value: str) -> str:
        out = truncate_text(value, self.max_bytes)
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: JSON text must be valid UTF-8
            out = out.encode("utf-8", "backslashreplace").decode("utf-8")
        if out is not value:
            self.changed = True
        return out

    def key(self, key: Any) -> str:
        if isinstance(key, str):
            return self.text(key)
        self.changed = True  # spelled as orjson's OPT_NON_STR_KEYS spells them
        if key is None or isinstance(key, bool):
            return "null" if key is None else ("true" if key else "false")
        return str(key) if isinstance(key, (int, float)) else self.text(repr_default(key))

    def value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            self.changed = True
            return None  # as orjson writes NaN and infinities
        if isinstance(value, int):
            if -(2**63) <= value < 2**64:
                return value
            self.changed = True
            return str(value)
        if isinstance(value, (dict, list, tuple)):
            return self.container(value, depth)
        self.changed = True
        if isinstance(value, enum.Enum):
            return self.value(value.value, depth + 1)
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()
        fields = getattr(type(value), "__dataclass_fields__", None)  # no import of dataclasses for this
        if fields is not None:
            return self.value({name: getattr(value, name, None) for name in fields}, depth + 1)
        if type(value).__name__ == "UUID":
            return str(value)
        return self.text(repr_default(value))

    def container(self, value: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> Any:
        if depth >= _MAX_DEPTH or id(value) in self.open:
            self.changed = True
            return f"<{'cycle' if id(value) in self.open else 'too deep'}: {type(value).__qualname__}>"
        self.open.add(id(value))
        try:
            if isinstance(value, dict):
                return {self.key(k): self.value(v, depth + 1) for k, v in value.items()}
            return [self.value(v, depth + 1) for v in value]
        finally:
            self.open.discard(id(value))


def encode_record(record: dict[str, Any], max_value_bytes: int) -> bytes:
    """One NDJSON line (ending in a newline) for `record`; raises only if even the plain walk fails."""
    try:
        line = fast_dumps(record, default=repr_default, option=FAST_OPTIONS)
    except Exception:
        try:
            line = _dumps(record, _ANY_KEYS)
        except Exception:
            return _dumps(_Walk(max_value_bytes).value(record))
    if len(line) <= max_value_bytes:
        return line
    walk = _Walk(max_value_bytes)
    plain = walk.value(record)
    return _dumps(plain) if walk.changed else line
