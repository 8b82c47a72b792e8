"""OpenTelemetry SDK → shipper: a `SpanExporter` that hands each finished span to the local daemon.

    import shipper.otel
    shipper.otel.install(service="rag-api")      # one line: a TracerProvider that ships through shipper

or, with a TracerProvider of your own:

    provider.add_span_processor(SimpleSpanProcessor(shipper.otel.ShipperSpanExporter()))

Sending is a local non-blocking socket write (or a spool append), so the SDK's `SimpleSpanProcessor` is
the right processor: no batching thread, nothing lost at exit, no flush to call. Each `ReadableSpan`
becomes a record v1 through `shipper.otlp.decode` (the same mapping the daemon's `otlp_http` receiver
uses): attributes passed through, OpenInference / `gen_ai.*` / `langfuse.*` attributes also lifted into
`kind`, `llm`, `input`, `output`, `session_id`, `user_id`, `tags`; resource, status, events and links kept.

Nesting with shipper's own spans: under `install()`, an OpenTelemetry root span started inside a shipper
span (`@shipper.traced`, `shipper.span`) joins that span's trace as its child (`ShipperIdGenerator` gives
it the trace id, `ShipperSpanProcessor` remembers the parent), and spans started inside a shipper span or
a `shipper.trace_context()` block carry its session, user, tags and project. With a provider of your
own, pass `id_generator=ShipperIdGenerator()` and use `ShipperSpanProcessor()` to get the same. (The
other way round, a shipper span started inside an OpenTelemetry span, starts a trace of its own.)

This module imports the OpenTelemetry SDK; `import shipper` does not import this module.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from shipper.client import transport
from shipper.client.context import current_fields
from shipper.client.fields import TRACE_FIELDS
from shipper.client.propagation import extract, inject
from shipper.client.span import current_span
from shipper.otlp.decode import OTelSpan, to_record

__all__ = ["ShipperIdGenerator", "ShipperSpanExporter", "ShipperSpanProcessor", "install", "span_record"]

_OTLP_KIND = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}
"""opentelemetry.trace.SpanKind values → record `otel_kind`."""
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_PARENTS_KEPT = 4096


def _hex_trace(value: int) -> str:
    return f"{value:032x}"


def _hex_span(value: int) -> str:
    return f"{value:016x}"


def span_record(span: ReadableSpan, service: str | None = None, parent_id: str | None = None) -> dict[str, Any]:
    """The record v1 of a finished OpenTelemetry span (`service` stands in for an unnamed resource)."""
    ctx = span.get_span_context()
    assert ctx is not None  # a finished SDK span always has its context
    parent = span.parent
    scope = span.instrumentation_scope
    status = span.status
    otel = OTelSpan(
        trace_id=_hex_trace(ctx.trace_id),
        span_id=_hex_span(ctx.span_id),
        parent_id=_hex_span(parent.span_id) if parent is not None and parent.span_id else parent_id,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        otel_kind=_OTLP_KIND.get(span.kind.value, "internal"),
        status=_STATUS.get(status.status_code.value, "unset"),
        status_message=status.description or "",
        attributes=span.attributes or {},
        events=[(e.name, e.timestamp, e.attributes or {}) for e in span.events],
        links=[(_hex_trace(lk.context.trace_id), _hex_span(lk.context.span_id), lk.attributes or {})
               for lk in span.links],
        resource=span.resource.attributes if span.resource is not None else {},
        scope_name=scope.name if scope is not None else "",
        scope_version=(scope.version or "") if scope is not None else "",
    )
    return to_record(otel, service)


class ShipperSpanExporter(SpanExporter):
    """Sends finished OpenTelemetry spans to the shipper daemon as records v1; never blocks, never raises."""

    def __init__(self, service: str | None = None) -> None:
        self.service = service
        self._started: OrderedDict[int, tuple[str | None, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._shut = False

    def adopt(self, span_id: int, parent_id: str | None, fields: dict[str, Any] | None = None) -> None:
        """Remember, for the OpenTelemetry span `span_id`, its shipper parent span (a root span started
        inside a shipper span) and the shipper trace-wide fields around it (`trace_context()`)."""
        with self._lock:
            self._started[span_id] = (parent_id, fields or {})
            while len(self._started) > _PARENTS_KEPT:
                self._started.popitem(last=False)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Turn each span into a record and send it; the outcome shows in `shipper.statistics()`."""
        if self._shut:
            return SpanExportResult.FAILURE
        service = self.service or transport.active().service
        for span in spans:
            try:
                parent_id, fields = None, None
                if self._started:
                    with self._lock:
                        parent_id, fields = self._started.pop(
                            span.get_span_context().span_id, (None, None))  # type: ignore[union-attr]
                record = span_record(span, service, parent_id)
                if fields:
                    for key, value in fields.items():
                        record.setdefault(key, value)  # the span's own attributes win
                transport.emit_record(record)
            except Exception:  # one odd span must not stop the others, nor reach the app
                continue
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: every exported span is already on the socket or in the spool."""
        return True

    def shutdown(self) -> None:
        """Stop exporting; later spans are refused (`FAILURE`), as the SDK expects."""
        self._shut = True


class ShipperIdGenerator(IdGenerator):
    """Random ids, except that a root span started inside a shipper span takes that span's trace id."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        current = current_span()
        if current.is_recording() and current.trace_id:
            return int(current.trace_id, 16)
        return self._random.generate_trace_id()


class ShipperSpanProcessor(SimpleSpanProcessor):
    """`SimpleSpanProcessor` that also ties OpenTelemetry spans to the enclosing shipper span and fields.

    A root span started inside a shipper span becomes its child (with `ShipperIdGenerator` it is already
    in its trace); every span started inside a shipper span or a `trace_context()` block takes that
    trace's `session_id`, `user_id`, `tags` and `project` unless its own attributes say otherwise. They
    are read through the public W3C round trip (`inject` then `extract`), not the client's private state.
    """

    def __init__(self, exporter: ShipperSpanExporter | None = None) -> None:
        super().__init__(exporter or ShipperSpanExporter())
        self.exporter: ShipperSpanExporter = self.span_exporter  # type: ignore[assignment]

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        try:
            remote = extract(inject({}))
            fields = remote.fields if remote is not None else current_fields()
            wide = _wide(fields)
            parent_id = None
            if span.parent is None and remote is not None and remote.trace_id == _hex_trace(
                    span.get_span_context().trace_id):
                parent_id = remote.span_id
            if parent_id or wide:
                self.exporter.adopt(span.get_span_context().span_id, parent_id, wide)
        except Exception:  # never into the app
            pass


def _wide(fields: Any) -> dict[str, Any]:
    """Trace-wide fields as record fields (only those set)."""
    if fields is None:
        return {}
    out = {key: getattr(fields, key, None) for key in TRACE_FIELDS}
    return {key: (list(value) if key == "tags" else value) for key, value in out.items() if value}


def install(service: str | None = None, resource: dict[str, Any] | None = None,
            set_global: bool = True) -> TracerProvider:
    """A TracerProvider that sends every span through shipper, made the global one unless `set_global=False`.

    `service` becomes the resource's `service.name` (default: `OTEL_SERVICE_NAME`, else shipper's
    configured service); `resource` adds attributes to it (as does `OTEL_RESOURCE_ATTRIBUTES`). OpenTelemetry refuses to replace a global provider that is already set: then
    the provider is returned but not global, and a warning says so (OpenTelemetry's own).
    """
    name = service or os.environ.get("OTEL_SERVICE_NAME") or transport.active().service
    provider = TracerProvider(resource=Resource.create({"service.name": name, **(resource or {})}),
                              id_generator=ShipperIdGenerator())
    provider.add_span_processor(ShipperSpanProcessor(ShipperSpanExporter(service=name)))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
