"""Processor `truncate`: cap string values and whole records, in UTF-8 bytes, marking what was cut.

A string longer than `max_value_bytes` is cut at a character boundary and ends with the marker
`…[truncated N bytes]` (N: the bytes removed); the result, marker included, fits the cap. A record
whose JSON is still over `max_record_bytes` has all its strings capped at smaller and smaller sizes
(halving) until it fits; if strings were not what made it big (e.g. long number lists), its largest
fields are replaced, biggest first, by the marker alone. Structural fields (ids, kind, timestamps,
status) are never touched; a replaced field keeps its type (`metadata` becomes `{"truncated": marker}`,
`events` an empty list, `llm` loses its messages and params). A record that cannot be made to fit is dropped, counted `too_large`.
Records are copied on write, never changed in place (other exporters may share them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.component import Context
from shipper.processors.walk import STRUCTURAL, changed_paths, map_items
from shipper.record import Record
from shipper.values import ByteSize

__all__ = ["TruncateConfig", "TruncateProcessor", "cut"]

_MIN_VALUE = 64


def _marker(n: int) -> str:
    return f"…[truncated {n} bytes]"


def cut(text: str, limit: int) -> str:
    """`text` if it fits `limit` UTF-8 bytes, else its head plus the marker, within `limit` bytes."""
    if len(text) * 4 <= limit:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    keep = max(0, limit - len(_marker(len(data)).encode()))
    head = data[:keep].decode("utf-8", "ignore")
    return head + _marker(len(data) - len(head.encode("utf-8", "surrogatepass")))


@dataclass(kw_only=True)
class TruncateConfig:
    """The caps, in bytes."""

    max_value_bytes: ByteSize = field(default=64 * 1024, metadata={"min": _MIN_VALUE})
    max_record_bytes: ByteSize = field(default=1024 * 1024, metadata={"min": 16 * 1024})

    def check(self) -> list[str]:
        values = (self.max_value_bytes, self.max_record_bytes)
        if all(isinstance(v, int) for v in values) and self.max_value_bytes > self.max_record_bytes:
            return [f"max_value_bytes: {self.max_value_bytes} is more than max_record_bytes "
                    f"({self.max_record_bytes}); a value cannot be bigger than its record"]
        return []


def _capped(value: Any, limit: int) -> Any:
    """`value` with every string capped at `limit` bytes; the same object when nothing changed."""
    if isinstance(value, str):
        return cut(value, limit)
    if isinstance(value, dict):
        out = None
        for key, item in value.items():
            new = _capped(item, limit)
            if new is not item:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out
    if isinstance(value, list):
        return map_items(value, lambda item: _capped(item, limit))
    return value


def _cap_fields(span: Record, limit: int) -> Record:
    out = None
    for key, item in span.items():
        if key in STRUCTURAL:
            continue
        new = _capped(item, limit)
        if new is not item:
            if out is None:
                out = dict(span)
            out[key] = new
    return span if out is None else out


def _llm_shrunk(llm: Any, marker: str) -> Any:
    if not isinstance(llm, dict):
        return marker
    kept = {k: v for k, v in llm.items() if k not in ("input_messages", "output_messages", "params")}
    kept["params"] = {"truncated": marker}
    return kept


_SHRINK: dict[str, Any] = {
    "input": lambda value, marker: marker,
    "output": lambda value, marker: marker,
    "llm": _llm_shrunk,
    "metadata": lambda value, marker: {"truncated": marker},
    "attributes": lambda value, marker: {"shipper.truncated": marker},
    "events": lambda value, marker: [],
    "links": lambda value, marker: [],
    "resource": lambda value, marker: {},
}
"""How each bulky field is replaced when capping strings was not enough, keeping the record's shape."""


def _size(span: Record) -> int:
    return len(orjson.dumps(span))


class TruncateProcessor:
    """Caps strings and records; copies what it changes."""

    Config = TruncateConfig

    def __init__(self, config: TruncateConfig, ctx: Context) -> None:
        self.counters = ctx.counters
        self.max_value = config.max_value_bytes
        self.max_record = config.max_record_bytes

    def record(self, span: Record) -> Record | None:
        """The record within both caps, or None if it cannot be made to fit."""
        if _size(span) <= self.max_value:  # the common case: no value can be over the cap
            return span
        out = _cap_fields(span, self.max_value)
        if out is not span:
            self.counters.add("truncated_values")
        size = _size(out)
        if size <= self.max_record:
            return out
        self.counters.add("truncated_records")
        limit = self.max_value
        while size > self.max_record and limit > _MIN_VALUE:
            limit //= 2
            out = _cap_fields(out, limit)
            size = _size(out)
        if size > self.max_record:
            out = dict(out)
            bulky = sorted((k for k in _SHRINK if k in out), key=lambda k: len(orjson.dumps(out[k])), reverse=True)
            for key in bulky:
                out[key] = _SHRINK[key](out[key], _marker(len(orjson.dumps(out[key]))))
                size = _size(out)
                if size <= self.max_record:
                    break
        return out if size <= self.max_record else None

    def __call__(self, batch: list[Record]) -> list[Record]:
        out = []
        for span in batch:
            new = self.record(span)
            if new is not None:
                out.append(new)
        self.counters.drop("too_large", len(batch) - len(out))
        return out

    def explain(self, span: Record, trace: list[Record]) -> str:
        """Which fields would be cut, or that the record fits."""
        new = self.record(span)
        if new is None:
            return f"dropped (too_large): the record cannot be cut below {self.max_record} bytes"
        changes = changed_paths(span, new)
        if not changes:
            return f"kept: every value within {self.max_value} bytes, the record within {self.max_record}"
        return "kept, truncated: " + ", ".join(path for path, _ in changes)
