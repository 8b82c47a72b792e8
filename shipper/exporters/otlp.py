"""Record v1 → OTLP `ExportTraceServiceRequest` (opentelemetry-proto), as protobuf or OTLP/JSON bytes.

An `Encoder` is built once per exporter with the attribute mappers that exporter wants (semconv's
`gen_ai.*` and OpenInference ones, a backend's own namespace); the raw `attributes` of a record are
applied last, unchanged, so what the app set explicitly wins. Per record:

    trace_id, span_id, parent_id   → ids (bytes); name; otel_kind → Span.kind; start_ns, end_ns
    status, error                  → Status (error: code ERROR, message "Type: message") and an
                                     `exception` event (exception.type, .message, .stacktrace) at end_ns
    events, links                  → events and links, their attributes converted
    service, resource              → the ResourceSpans' resource (service.name + the extras); spans with
                                     the same resource share one ResourceSpans
Values: bool, int (int64; larger becomes text), float, str, lists of those (arrays), mappings (kvlists);
None is left out. Trace-wide fields (session_id, user_id, tags) found on any span of a trace in the
batch are copied onto the spans of that trace that lack them (`fill_trace_wide`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from shipper.record import Span
from shipper.semconv import SERVICE_NAME, Attributes, json_text

__all__ = [
    "AttributeMapper",
    "Encoder",
    "any_value",
    "fill_trace_wide",
    "group_by_project",
    "key_values",
    "partial_success",
    "to_json",
]

AttributeMapper = Callable[[Span], Attributes]
ResourceMapper = Callable[[str | None], Attributes]

SCOPE = InstrumentationScope(name="shipper", version="0.1.0")
TRACE_WIDE = ("session_id", "user_id", "tags")
_KINDS = {
    "internal": PbSpan.SPAN_KIND_INTERNAL, "server": PbSpan.SPAN_KIND_SERVER,
    "client": PbSpan.SPAN_KIND_CLIENT, "producer": PbSpan.SPAN_KIND_PRODUCER,
    "consumer": PbSpan.SPAN_KIND_CONSUMER,
}
_STATUS = {"ok": Status.STATUS_CODE_OK, "error": Status.STATUS_CODE_ERROR, "unset": Status.STATUS_CODE_UNSET}
_INT64 = (-(2**63), 2**63 - 1)


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value if v is not None]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    return AnyValue(string_value=json_text(value))


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    """A mapping as OTLP KeyValues, None values left out."""
    return [KeyValue(key=str(k), value=any_value(v)) for k, v in attributes.items() if v is not None]


def fill_trace_wide(batch: list[Span]) -> list[Span]:
    """Copy trace-wide fields found on any span of a trace onto its spans that lack them (new dicts)."""
    found: dict[str, dict[str, Any]] = {}
    for rec in batch:
        for key in TRACE_WIDE:
            if rec.get(key):
                found.setdefault(rec["trace_id"], {}).setdefault(key, rec[key])
    if not found:
        return batch
    out = []
    for rec in batch:
        wide = found.get(rec["trace_id"])
        missing = [k for k in TRACE_WIDE if wide and k in wide and not rec.get(k)]
        out.append({**rec, **{k: wide[k] for k in missing}} if missing else rec)  # type: ignore[index]
    return out


def group_by_project(batch: list[Span], default: str | None = None) -> dict[str | None, list[Span]]:
    """Spans by their `project` (or `default` when they have none), in first-seen order."""
    groups: dict[str | None, list[Span]] = {}
    for rec in batch:
        groups.setdefault(rec.get("project") or default, []).append(rec)
    return groups


def _events(rec: Span) -> list[PbSpan.Event]:
    events = [PbSpan.Event(name=str(e.get("name", "")), time_unix_nano=int(e.get("time_ns") or rec["end_ns"]),
                           attributes=key_values(e.get("attributes") or {}))
              for e in rec.get("events") or ()]
    error = rec.get("error")
    if error:
        attrs = {"exception.type": error.get("type"), "exception.message": error.get("message"),
                 "exception.stacktrace": error.get("stack")}
        events.append(PbSpan.Event(name="exception", time_unix_nano=rec["end_ns"], attributes=key_values(attrs)))
    return events


def _status(rec: Span) -> Status:
    error = rec.get("error")
    if error:
        kind, message = error.get("type") or "", error.get("message") or ""
        return Status(code=Status.STATUS_CODE_ERROR, message=f"{kind}: {message}" if kind and message
                      else kind or message)
    return Status(code=_STATUS.get(rec.get("status") or "unset", Status.STATUS_CODE_UNSET))


class Encoder:
    """Builds export requests from records with a fixed set of attribute and resource mappers."""

    def __init__(self, mappers: Sequence[AttributeMapper], resource: ResourceMapper | None = None) -> None:
        self.mappers = tuple(mappers)
        self.resource = resource

    def attributes(self, rec: Span) -> Attributes:
        """Every mapped attribute of a record, the record's raw `attributes` last."""
        out: Attributes = {}
        for mapper in self.mappers:
            out.update(mapper(rec))
        out.update(rec.get("attributes") or {})
        return out

    def span(self, rec: Span) -> PbSpan:
        """One record as an OTLP span."""
        parent = rec.get("parent_id")
        return PbSpan(
            trace_id=bytes.fromhex(rec["trace_id"]),
            span_id=bytes.fromhex(rec["span_id"]),
            parent_span_id=bytes.fromhex(parent) if parent else b"",
            name=rec["name"],
            kind=_KINDS.get(rec.get("otel_kind") or "internal", PbSpan.SPAN_KIND_INTERNAL),
            start_time_unix_nano=rec["start_ns"],
            end_time_unix_nano=rec["end_ns"],
            attributes=key_values(self.attributes(rec)),
            events=_events(rec),
            links=[PbSpan.Link(trace_id=bytes.fromhex(lk["trace_id"]), span_id=bytes.fromhex(lk["span_id"]),
                               attributes=key_values(lk.get("attributes") or {}))
                   for lk in rec.get("links") or ()],
            status=_status(rec),
        )

    def resource_attributes(self, rec: Span, project: str | None) -> Attributes:
        """The resource of a record: service.name, the record's resource, the exporter's extras."""
        out: Attributes = {}
        if rec.get("service"):
            out[SERVICE_NAME] = rec["service"]
        out.update(rec.get("resource") or {})
        if self.resource is not None:
            out.update(self.resource(project))
        return out

    def request(self, records: Iterable[Span], project: str | None = None) -> ExportTraceServiceRequest:
        """One export request; records sharing a resource share a ResourceSpans."""
        by_resource: dict[bytes, tuple[Attributes, list[PbSpan]]] = {}
        for rec in records:
            resource = self.resource_attributes(rec, project)
            key = orjson.dumps(resource, default=str, option=orjson.OPT_SORT_KEYS)
            by_resource.setdefault(key, (resource, []))[1].append(self.span(rec))
        return ExportTraceServiceRequest(resource_spans=[
            ResourceSpans(resource=Resource(attributes=key_values(resource)),
                          scope_spans=[ScopeSpans(scope=SCOPE, spans=spans)])
            for resource, spans in by_resource.values()
        ])


def _ids_to_hex(item: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if item.get(key):
            item[key] = base64.b64decode(item[key]).hex()


def to_json(message: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON bytes: lowerCamelCase keys, enums as integers, ids as hex (not protobuf's base64)."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    for rs in data.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                _ids_to_hex(span)
                for link in span.get("links", ()):
                    _ids_to_hex(link)
    return orjson.dumps(data)


def partial_success(body: bytes, content_type: str) -> tuple[int, str]:
    """Rejected span count and message of an ExportTraceServiceResponse; (0, "") when absent or unreadable."""
    if not body:
        return 0, ""
    response = ExportTraceServiceResponse()
    try:
        if "json" in content_type:
            json_format.Parse(body, response, ignore_unknown_fields=True)
        elif "protobuf" in content_type:
            response.ParseFromString(body)
        else:
            return 0, ""
    except Exception:  # an unreadable 2xx body still means the backend took the batch
        return 0, ""
    return response.partial_success.rejected_spans, response.partial_success.error_message
