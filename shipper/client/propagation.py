"""W3C trace context across processes: `traceparent` for the parent span, `baggage` for trace-wide fields.

`inject(headers)` writes `traceparent: 00-<trace_id>-<span_id>-01` for the current span and adds
`session.id`, `user.id`, `shipper.project` and `shipper.tags` to `baggage` (other members are kept).
`extract(headers)` reads them back into a `RemoteParent`, which `span(..., parent=...)` continues:

    httpx.post(url, headers=shipper.inject({}))                      # the caller
    with shipper.span("handle", parent=shipper.extract(request.headers)):  # the callee
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

from .context import TraceFields, current_fields, current_span_var

__all__ = ["RemoteParent", "extract", "inject"]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_BAGGAGE_KEYS = {"session.id": "session_id", "user.id": "user_id", "shipper.project": "project"}
_TAGS_KEY = "shipper.tags"
_OURS = frozenset([*_BAGGAGE_KEYS, _TAGS_KEY])


class RemoteParent:
    """A span in another process, read from `traceparent`, with the trace-wide fields from `baggage`."""

    __slots__ = ("trace_id", "span_id", "sampled", "fields")

    def __init__(self, trace_id: str, span_id: str, sampled: bool, fields: TraceFields | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.fields = fields

    def __repr__(self) -> str:
        return f"RemoteParent(trace_id={self.trace_id!r}, span_id={self.span_id!r})"


def inject(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Add `traceparent` (and `baggage`) for the current span to `headers`, and return it."""
    if headers is None:
        headers = {}
    span = current_span_var.get()
    fields = current_fields()
    if span is not None:
        headers["traceparent"] = f"00-{span.trace_id}-{span.span_id}-01"
        fields = span._trace[0] if span._trace is not None else fields
    if fields is not None:
        members = [f"{key}={quote(value, safe='')}" for key, attr in _BAGGAGE_KEYS.items()
                   if (value := getattr(fields, attr)) is not None]
        if fields.tags:
            joined = ",".join(quote(tag, safe="") for tag in fields.tags)
            members.append(f"{_TAGS_KEY}={quote(joined, safe='')}")
        if members:
            kept = [m for m in _members(headers.get("baggage") or "") if _key(m) not in _OURS]
            headers["baggage"] = ",".join([*kept, *members])
    return headers


def extract(headers: Mapping[str, Any]) -> RemoteParent | None:
    """The remote parent named by `headers` (any key case), or None if `traceparent` is absent or invalid."""
    traceparent = _header(headers, "traceparent")
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    found: dict[str, Any] = {}
    for member in _members(_header(headers, "baggage") or ""):
        key = _key(member)
        value = unquote(member.partition("=")[2].partition(";")[0].strip())
        if key in _BAGGAGE_KEYS:
            found[_BAGGAGE_KEYS[key]] = value
        elif key == _TAGS_KEY and value:
            found["tags"] = [unquote(tag) for tag in value.split(",")]
    return RemoteParent(trace_id, span_id, bool(int(flags, 16) & 1), TraceFields(**found) if found else None)


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value) if name == "baggage" else (value[0] if value else None)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def _members(baggage: str) -> list[str]:
    return [m.strip() for m in baggage.split(",") if m.strip()]


def _key(member: str) -> str:
    return member.partition("=")[0].strip()
