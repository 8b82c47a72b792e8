"""OTLP requests kept as they came: which may be, how a queue tells them apart, and their records.

When nothing needs to see the spans as records (no processor, and every exporter sends OTLP on
unchanged: docs/forwarding.md), an OTLP receiver hands a protobuf `ExportTraceServiceRequest` over as it
came, and the exporters' queues keep it as one record whose payload is those bytes. Sending it on is
then a concatenation: the request has one field, `repeated ResourceSpans resource_spans = 1`, so two
encoded requests joined are one valid request holding the spans of both.

`check` says whether a request may be kept so: protobuf's C parser reads the whole of it (so its text is
valid UTF-8 and its structure sound), and each span has the fields a backend refuses a request without
(ids of the right size and not all zeros, a name of 1 to 1024 characters, an end not before its start).
A request that fails it is decoded into records as usual, so a bad span is rejected alone and cannot
make a backend refuse the batch it would have been sent in.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.otlp.decode import check_groups, decode_spans
from shipper.record import Record, Reject

__all__ = ["MARK", "check", "decode", "is_forwarded"]

MARK = 0x0A
"""The first byte of every non-empty encoded request (field 1, length-delimited). A queue record of span
records starts with `{`, so the first byte of a payload tells the two apart."""

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def is_forwarded(payload: bytes) -> bool:
    """True when a queue record's payload is an OTLP request kept as it came, not NDJSON records."""
    return bool(payload) and payload[0] == MARK


def check(body: bytes, max_spans: int) -> int:
    """The number of spans of `body` if it may be forwarded as it is (see the module doc), else 0."""
    if not body or body[0] != MARK:
        return 0
    try:
        message = ExportTraceServiceRequest.FromString(body)
        check_groups(message)
    except DecodeError:
        return 0  # the decoding path says why
    count = 0
    for resource_spans in message.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            count += len(spans)
            if count > max_spans:
                return 0
            for pb in spans:
                if not _sound(pb):
                    return 0
    return count


def _sound(pb: Any) -> bool:
    trace_id, span_id, parent = pb.trace_id, pb.span_id, pb.parent_span_id
    if len(trace_id) != 16 or len(span_id) != 8 or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return False
    if parent and (len(parent) != 8 or parent == _ZERO_SPAN):
        return False
    if not 0 < len(pb.name) <= 1024 or pb.end_time_unix_nano < pb.start_time_unix_nano:
        return False
    return all(len(link.trace_id) == 16 and len(link.span_id) == 8 for link in pb.links) if pb.links else True


def decode(body: bytes, max_record_bytes: int) -> tuple[list[Record], list[Reject]]:
    """The records (and rejects) of a forwarded request, as an OTLP receiver decodes them (the general
    path: this is for the rare reader of a forwarded request, an exporter that does not forward after a
    config change, dead letters, `shipper tail`)."""
    try:
        message = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:  # not seen: the request was read whole before it was queued
        return [], [Reject("not_otlp", f"a forwarded OTLP request cannot be read: {str(exc)[:200]}", body[:1024])]
    return decode_spans(message, max_record_bytes)
