"""Record v1 → OTLP `ExportTraceServiceRequest` (opentelemetry-proto), as protobuf or OTLP/JSON bytes.

An `Encoder` is built once per exporter with the attribute mappers that exporter wants (semconv's
`gen_ai.*` and OpenInference ones, a backend's own namespace); the raw `attributes` of a record are
applied last, unchanged, so what the app set explicitly wins. Per record:

    trace_id, span_id, parent_id   → ids (bytes); name; start_ns, end_ns
    otel_kind                      → Span.kind (`semconv.otel_kind_of`: llm / embedding spans without
                                     one are CLIENT, as OTel GenAI says inference spans are)
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
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from shipper.client.fields import TRACE_FIELDS
from shipper.otlp.semconv import SERVICE_NAME, Attributes, json_text, otel_kind_of
from shipper.record import Record
from shipper.version import VERSION

__all__ = [
    "AttributeMapper",
    "Encoder",
    "add_attributes",
    "any_value",
    "fill_core",
    "fill_trace_wide",
    "group_by_project",
    "key_values",
    "partial_success",
    "set_value",
    "to_json",
]

AttributeMapper = Callable[[Record], Attributes]
ResourceMapper = Callable[[str | None], Attributes]

SCOPE = InstrumentationScope(name="shipper", version=VERSION)
TRACE_WIDE = tuple(key for key in TRACE_FIELDS if key != "project")
"""Copied across a trace's spans; `project` is not: each span's own project picks where it is sent."""
_KINDS = {
    "internal": PbSpan.SPAN_KIND_INTERNAL, "server": PbSpan.SPAN_KIND_SERVER,
    "client": PbSpan.SPAN_KIND_CLIENT, "producer": PbSpan.SPAN_KIND_PRODUCER,
    "consumer": PbSpan.SPAN_KIND_CONSUMER,
}
_STATUS = {"ok": Status.STATUS_CODE_OK, "error": Status.STATUS_CODE_ERROR, "unset": Status.STATUS_CODE_UNSET}
_INT64 = (-(2**63), 2**63 - 1)


def set_value(target: AnyValue, value: Any) -> None:
    """Write a Python value into an OTLP AnyValue, in place (building messages in place is 3x faster)."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, (list, tuple)):
        array = target.array_value
        array.SetInParent()
        add = array.values.add
        for item in value:
            if item is not None:
                set_value(add(), item)
    elif isinstance(value, dict):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        add_attributes(kvlist.values, value)
    elif isinstance(value, bytes):
        target.bytes_value = value
    else:
        target.string_value = json_text(value)


def add_attributes(repeated: Any, attributes: dict[str, Any]) -> None:
    """Append a mapping to a repeated KeyValue field, None values left out.

    The common scalars are written inline (about a quarter faster than through `set_value`): this is
    the exporters' per-attribute loop, some twenty times per span.
    """
    add = repeated.add
    low, high = _INT64
    for key, value in attributes.items():
        kind = type(value)
        if type(key) is not str:
            if value is not None:
                set_value(add(key=str(key)).value, value)
        elif kind is str:
            add(key=key).value.string_value = value
        elif kind is int and low <= value <= high:
            add(key=key).value.int_value = value
        elif kind is float:
            add(key=key).value.double_value = value
        elif kind is bool:
            add(key=key).value.bool_value = value
        elif value is not None:
            set_value(add(key=key).value, value)


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue."""
    out = AnyValue()
    set_value(out, value)
    return out


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    """A mapping as OTLP KeyValues, None values left out."""
    return [KeyValue(key=str(k), value=any_value(v)) for k, v in attributes.items() if v is not None]


def fill_trace_wide(batch: list[Record],
                    copy: Callable[[Record, dict[str, Any]], Record] | None = None) -> list[Record]:
    """Copy trace-wide fields found on any span of a trace onto its spans that lack them (new dicts,
    made by `copy(rec, fields)` when given: `{**rec, **fields}`)."""
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
        if not missing:
            out.append(rec)
        elif copy is None:
            out.append({**rec, **{k: wide[k] for k in missing}})  # type: ignore[index]
        else:
            out.append(copy(rec, {k: wide[k] for k in missing}))  # type: ignore[index]
    return out


def group_by_project(batch: list[Record], default: str | None = None) -> dict[str | None, list[Record]]:
    """Spans by their `project` (or `default` when they have none), in first-seen order."""
    groups: dict[str | None, list[Record]] = {}
    for rec in batch:
        groups.setdefault(rec.get("project") or default, []).append(rec)
    return groups


def _add_events(events: Any, rec: Record) -> None:
    for e in rec.get("events") or ():
        event = events.add(name=str(e.get("name", "")), time_unix_nano=int(e.get("time_ns") or rec["end_ns"]))
        add_attributes(event.attributes, e.get("attributes") or {})
    error = rec.get("error")
    if error:
        event = events.add(name="exception", time_unix_nano=rec["end_ns"])
        add_attributes(event.attributes, {"exception.type": error.get("type"),
                                          "exception.message": error.get("message"),
                                          "exception.stacktrace": error.get("stack")})


def _status(rec: Record) -> Status:
    error = rec.get("error")
    if error:
        kind, message = error.get("type") or "", error.get("message") or ""
        return Status(code=Status.STATUS_CODE_ERROR, message=f"{kind}: {message}" if kind and message
                      else kind or message)
    return Status(code=_STATUS.get(rec.get("status") or "unset", Status.STATUS_CODE_UNSET))


def fill_core(span: PbSpan, rec: Record) -> None:
    """Everything of a record's OTLP span but its attributes: ids, name, kind, times, events, links,
    status (the same for every exporter; `shipper.otlp.wire` encodes it once per span)."""
    parent = rec.get("parent_id")
    span.trace_id = bytes.fromhex(rec["trace_id"])
    span.span_id = bytes.fromhex(rec["span_id"])
    if parent:
        span.parent_span_id = bytes.fromhex(parent)
    span.name = rec["name"]
    span.kind = _KINDS.get(otel_kind_of(rec), PbSpan.SPAN_KIND_INTERNAL)
    span.start_time_unix_nano = rec["start_ns"]
    span.end_time_unix_nano = rec["end_ns"]
    _add_events(span.events, rec)
    for lk in rec.get("links") or ():
        link = span.links.add(trace_id=bytes.fromhex(lk["trace_id"]), span_id=bytes.fromhex(lk["span_id"]))
        add_attributes(link.attributes, lk.get("attributes") or {})
    span.status.CopyFrom(_status(rec))


class Encoder:
    """Builds export requests from records with a fixed set of attribute and resource mappers."""

    def __init__(self, mappers: Sequence[AttributeMapper], resource: ResourceMapper | None = None) -> None:
        self.mappers = tuple(mappers)
        self.resource = resource

    def attributes(self, rec: Record) -> Attributes:
        """Every mapped attribute of a record, the record's raw `attributes` last."""
        out: Attributes = {}
        for mapper in self.mappers:
            out.update(mapper(rec))
        out.update(rec.get("attributes") or {})
        return out

    def span(self, rec: Record) -> PbSpan:
        """One record as an OTLP span."""
        out = PbSpan()
        self.fill(out, rec)
        return out

    def fill(self, span: PbSpan, rec: Record) -> None:
        """Write one record into an (empty, usually just added) OTLP span."""
        fill_core(span, rec)
        add_attributes(span.attributes, self.attributes(rec))

    def resource_attributes(self, rec: Record, project: str | None) -> Attributes:
        """The resource of a record: service.name, the record's resource, the exporter's extras."""
        out: Attributes = {}
        if rec.get("service"):
            out[SERVICE_NAME] = rec["service"]
        out.update(rec.get("resource") or {})
        if self.resource is not None:
            out.update(self.resource(project))
        return out

    def request(self, records: Iterable[Record], project: str | None = None) -> ExportTraceServiceRequest:
        """One export request; records sharing a resource share a ResourceSpans."""
        by_resource: dict[bytes, tuple[Attributes, list[Record]]] = {}
        for rec in records:
            resource = self.resource_attributes(rec, project)
            key = orjson.dumps(resource, default=str, option=orjson.OPT_SORT_KEYS)
            by_resource.setdefault(key, (resource, []))[1].append(rec)
        message = ExportTraceServiceRequest()
        for resource, group in by_resource.values():
            resource_spans = message.resource_spans.add()
            add_attributes(resource_spans.resource.attributes, resource)
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.CopyFrom(SCOPE)
            add = scope_spans.spans.add
            for rec in group:
                self.fill(add(), rec)
        return message


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
