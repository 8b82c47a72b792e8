"""Record v1 (docs/record.md), the daemon-side `Record` type: decoding NDJSON payloads and validating each, fast.

A record is kept as the plain `dict` it was decoded into (`Record`; the client's `shipper.Span` is the
app-side object that becomes one), so processors and exporters work on ordinary data. `decode_payload` never raises: every line becomes either a valid record or a `Reject`
with the short reason it is counted under, so one bad line never takes its neighbours down.
Reasons: not_json, not_an_object, unknown_version, missing_<field>, bad_trace_id, zero_trace_id,
bad_span_id, zero_span_id, bad_parent_id, bad_name, bad_timestamps, end_before_start, bad_kind,
bad_otel_kind, bad_status, bad_error, bad_field_type, nested_attribute, long_key, negative_tokens,
bad_llm, bad_events, bad_links, too_large.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from shipper.client.fields import KINDS, OTEL_KINDS, STATUSES, TRACE_FIELDS, USAGE_KEYS
from shipper.errors import RecordError

__all__ = ["KINDS", "MAX_RECORD_BYTES", "STATUSES", "Record", "Reject", "decode_payload", "validate"]

Record = dict[str, Any]

MAX_KEY_CHARS = 256
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""The default of the `max_record_bytes` setting: a longer NDJSON line is rejected as `too_large`."""
_TEXT_FIELDS = ("service", *(key for key in TRACE_FIELDS if key != "tags"))

_TRACE_ID = re.compile(r"[0-9a-f]{32}").fullmatch
_SPAN_ID = re.compile(r"[0-9a-f]{16}").fullmatch
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class Reject:
    """A line that is not a valid record: the raw bytes (capped), and why."""

    reason: str
    detail: str
    line: bytes


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check_ids(rec: Record) -> None:
    trace_id = rec.get("trace_id")
    if trace_id is None:
        raise RecordError("missing_trace_id", "trace_id is required")
    if type(trace_id) is not str or not _TRACE_ID(trace_id):
        raise RecordError("bad_trace_id", "trace_id must be 32 lowercase hex characters")
    if trace_id == _ZERO_TRACE:
        raise RecordError("zero_trace_id", "trace_id must not be all zeros")
    span_id = rec.get("span_id")
    if span_id is None:
        raise RecordError("missing_span_id", "span_id is required")
    if type(span_id) is not str or not _SPAN_ID(span_id):
        raise RecordError("bad_span_id", "span_id must be 16 lowercase hex characters")
    if span_id == _ZERO_SPAN:
        raise RecordError("zero_span_id", "span_id must not be all zeros")
    parent_id = rec.get("parent_id")
    if parent_id is not None and (
        type(parent_id) is not str or not _SPAN_ID(parent_id) or parent_id == _ZERO_SPAN
    ):
        raise RecordError("bad_parent_id", "parent_id must be null or 16 lowercase hex, not all zeros")


def _check_attributes(attributes: Any, where: str) -> None:
    if type(attributes) is not dict:
        raise RecordError("bad_field_type", f"{where} must be an object")
    for key, value in attributes.items():
        if len(key) > MAX_KEY_CHARS:
            raise RecordError("long_key", f"{where} key longer than {MAX_KEY_CHARS} characters")
        if isinstance(value, _SCALARS):
            continue
        if type(value) is list and all(isinstance(item, _SCALARS) for item in value):
            continue
        raise RecordError("nested_attribute", f"{where}.{key} must be a scalar or a list of scalars")


def _check_llm(llm: Any) -> None:
    if type(llm) is not dict:
        raise RecordError("bad_llm", "llm must be an object")
    usage = llm.get("usage")
    if usage is not None:
        if type(usage) is not dict:
            raise RecordError("bad_llm", "llm.usage must be an object")
        for key in USAGE_KEYS:
            count = usage.get(key)
            if count is None:
                continue
            if not _is_int(count):
                raise RecordError("bad_llm", f"llm.usage.{key} must be an integer")
            if count < 0:
                raise RecordError("negative_tokens", f"llm.usage.{key} must not be negative")
    cost = llm.get("cost_usd")
    if cost is not None and (type(cost) not in (int, float) or cost < 0):
        raise RecordError("bad_llm", "llm.cost_usd must be a non-negative number")
    for key in ("input_messages", "output_messages"):
        messages = llm.get(key)
        if messages is None:
            continue
        if type(messages) is not list or not all(type(m) is dict and "role" in m for m in messages):
            raise RecordError("bad_llm", f"llm.{key} must be a list of objects with a role")


def _check_optional(rec: Record) -> None:
    kind = rec.get("kind")
    if kind is not None and kind not in KINDS:
        raise RecordError("bad_kind", f"kind {str(kind)[:40]!r} is not one of {', '.join(sorted(KINDS))}")
    otel_kind = rec.get("otel_kind")
    if otel_kind is not None and otel_kind not in OTEL_KINDS:
        raise RecordError("bad_otel_kind", f"otel_kind must be one of {', '.join(sorted(OTEL_KINDS))}")
    status = rec.get("status")
    if status is not None and status not in STATUSES:
        raise RecordError("bad_status", "status must be ok, error or unset")
    error = rec.get("error")
    if error is not None and (
        type(error) is not dict or any(type(v) is not str for v in error.values())
    ):
        raise RecordError("bad_error", "error must be an object of strings {type, message, stack}")
    for key in _TEXT_FIELDS:
        value = rec.get(key)
        if value is not None and type(value) is not str:
            raise RecordError("bad_field_type", f"{key} must be a string")
    tags = rec.get("tags")
    if tags is not None and (type(tags) is not list or not all(type(t) is str for t in tags)):
        raise RecordError("bad_field_type", "tags must be a list of strings")
    for key in ("metadata", "resource"):
        value = rec.get(key)
        if value is not None and type(value) is not dict:
            raise RecordError("bad_field_type", f"{key} must be an object")
    attributes = rec.get("attributes")
    if attributes is not None:
        _check_attributes(attributes, "attributes")
    llm = rec.get("llm")
    if llm is not None:
        _check_llm(llm)
    events = rec.get("events")
    if events is not None and (
        type(events) is not list
        or not all(type(e) is dict and type(e.get("name")) is str and _is_int(e.get("time_ns")) for e in events)
    ):
        raise RecordError("bad_events", "events must be a list of {name, time_ns, attributes}")
    links = rec.get("links")
    if links is not None and (
        type(links) is not list
        or not all(
            type(link) is dict
            and type(link.get("trace_id")) is str
            and _TRACE_ID(link["trace_id"])
            and type(link.get("span_id")) is str
            and _SPAN_ID(link["span_id"])
            for link in links
        )
    ):
        raise RecordError("bad_links", "links must be a list of {trace_id, span_id, attributes}")


def validate(rec: Any) -> Record:
    """Return `rec` if it is a valid record v1, else raise `RecordError` with the counted reason."""
    if type(rec) is not dict:
        raise RecordError("not_an_object", "a record must be a JSON object")
    version = rec.get("v", 1)
    if version != 1 or type(version) is not int:
        raise RecordError("unknown_version", f"record version {str(version)[:20]} is not supported (1 is)")
    _check_ids(rec)
    name = rec.get("name")
    if name is None:
        raise RecordError("missing_name", "name is required")
    if type(name) is not str or not 1 <= len(name) <= 1024:
        raise RecordError("bad_name", "name must be a string of 1 to 1024 characters")
    start_ns = rec.get("start_ns")
    end_ns = rec.get("end_ns")
    if start_ns is None or end_ns is None:
        raise RecordError("missing_timestamps", "start_ns and end_ns are required")
    if not _is_int(start_ns) or not _is_int(end_ns) or start_ns < 0:
        raise RecordError("bad_timestamps", "start_ns and end_ns must be non-negative integers (Unix ns)")
    if end_ns < start_ns:
        raise RecordError("end_before_start", "end_ns is before start_ns")
    _check_optional(rec)
    return rec


def decode_payload(payload: bytes, max_record_bytes: int) -> tuple[list[Record], list[Reject]]:
    """Split NDJSON `payload` into valid records and rejects; never raises."""
    records: list[Record] = []
    rejects: list[Reject] = []
    end = payload.find(b"\n")
    if (end == -1 or end == len(payload) - 1) and 0 < len(payload) <= max_record_bytes:
        try:  # one line, as the shim sends it: no split, no copy
            records.append(validate(orjson.loads(payload)))
            return records, rejects
        except (orjson.JSONDecodeError, RecordError):
            pass  # said again below, with its reason
    for line in payload.split(b"\n"):
        if not line or line.isspace():
            continue
        if len(line) > max_record_bytes:
            rejects.append(Reject("too_large", f"record of {len(line)} bytes is over {max_record_bytes}",
                                  line[:1024]))
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            rejects.append(Reject("not_json", str(exc)[:200], line[:65536]))
            continue
        try:
            records.append(validate(rec))
        except RecordError as exc:
            rejects.append(Reject(exc.reason, exc.detail, line[:65536]))
    return records, rejects
