"""A span: timed on entry and exit, nested through contextvars, turned into one record when it ends."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

from . import transport
from .context import Trace, current_fields, current_span_var, trace_fields
from .ids import new_span_id, new_trace_id
from .propagation import RemoteParent

__all__ = ["KINDS", "NOOP_SPAN", "Span", "current_span", "error_of", "span"]

KINDS = frozenset(
    ["llm", "chain", "tool", "agent", "embedding", "retriever", "reranker", "guardrail", "evaluator",
     "prompt", "task", "span"]
)
STATUSES = frozenset(["ok", "error", "unset"])
OTEL_KINDS = frozenset(["internal", "server", "client", "producer", "consumer"])
# Keywords span() takes besides name, kind and parent: the record's per-span fields, then the trace-wide
# ones, which go to the span's trace (as trace_context() would put them).
SPAN_FIELDS = frozenset(
    ["input", "output", "metadata", "llm", "attributes", "otel_kind", "events", "links", "resource"]
)
TRACE_FIELDS = frozenset(["session_id", "user_id", "tags", "project"])
_SCALARS = (str, bool, int, float)

_resource = {"process.pid": os.getpid()}  # shared by every record; replaced in a forked child
_time_ns = time.time_ns


def _after_fork_in_child() -> None:
    global _resource
    _resource = {"process.pid": os.getpid()}


os.register_at_fork(after_in_child=_after_fork_in_child)


def error_of(exc: BaseException) -> dict[str, str]:
    """The record's `error` object for an exception: qualified type, message, formatted traceback."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {name}>"
    try:
        stack = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    except Exception:
        stack = ""
    return {"type": name, "message": message, "stack": stack}


def _attributes(values: Any) -> dict[str, Any]:
    """OpenTelemetry attributes: scalars or lists of scalars; anything else becomes its repr."""
    if not isinstance(values, dict):
        return {"value": repr(values)}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(value, _SCALARS):
            scalars = isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value)
            value = list(value) if scalars else repr(value)
        clean[str(key)[:256]] = value
    return clean


class Span:
    """One step of a trace. Use it as `with shipper.span(...) as s:` (or `async with`); see `log()`."""

    __slots__ = ("name", "kind", "trace_id", "span_id", "start_ns", "_parent", "_trace", "_fields",
                 "_trace_fields", "_status", "_error", "_token", "_ended")

    def __init__(
        self,
        name: str,
        kind: str = "span",
        parent: Span | RemoteParent | None = None,
        fields: dict[str, Any] | None = None,
        trace_fields: Trace | None = None,
    ) -> None:
        self.name = name if type(name) is str and 0 < len(name) <= 1024 else (str(name)[:1024] or "unnamed")
        self.kind = kind if kind in KINDS else "span"
        self.trace_id = ""
        self.span_id = ""
        self.start_ns = 0
        self._parent = parent
        self._trace: Trace | None = None
        self._fields = fields if fields is not None else {}
        self._trace_fields = trace_fields  # span(session_id=...): set on the trace when the span starts
        self._status: str | None = None
        self._error: dict[str, str] | None = None
        self._token: Any = None
        self._ended = False

    # Life: start on entry, end and emit on exit.

    def __enter__(self) -> Span:
        self._start()
        self._token = current_span_var.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._end(exc if exc_type is not None and exc_type is not GeneratorExit else None)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._end(exc if exc_type is not None and exc_type is not GeneratorExit else None)

    def _start(self) -> None:
        """Take ids and the start time, under the current span (or the given parent); attach nothing."""
        parent = self._parent or current_span_var.get()
        if type(parent) is Span:
            trace = parent._trace
            if trace is None:  # the no-op span, or one never entered: start a trace of our own
                parent = None
        elif parent is not None:  # a RemoteParent from extract(): its trace, its baggage, then our blocks
            trace = parent.fields.started(parent.trace_id)
            fields = current_fields()
            if fields is not None:
                trace.update(fields)
        if parent is None:
            fields = current_fields()
            trace = Trace(new_trace_id()) if fields is None else fields.started(new_trace_id())
        if self._trace_fields is not None:
            trace.update(self._trace_fields)
        self._parent = parent
        self._trace = trace
        self.trace_id = trace.trace_id
        self.span_id = new_span_id()
        self.start_ns = _time_ns()

    def _end(self, exc: BaseException | None) -> None:
        """Detach from the context, then finish."""
        try:
            current_span_var.reset(self._token)
        except Exception:  # ended in another context than it started in (or never entered)
            if current_span_var.get() is self:
                current_span_var.set(self._parent if type(self._parent) is Span else None)
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        """Stamp the end time and emit the record, once; never raises."""
        end_ns = _time_ns()
        if self._ended:
            return
        self._ended = True
        try:
            self._emit(end_ns, exc)
        except Exception:  # nothing of ours may reach the app
            pass

    def _emit(self, end_ns: int, exc: BaseException | None) -> None:
        sink = transport._active or transport.active()
        trace = self._trace
        record: dict[str, Any] = {
            "v": 1,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": end_ns,
            "service": sink.service,
            "resource": _resource,
        }
        parent = self._parent
        if parent is not None:
            record["parent_id"] = parent.span_id
        if exc is not None:
            record["status"] = "error"
            record["error"] = error_of(exc)
        elif self._status is not None:
            record["status"] = self._status
            if self._error is not None:
                record["error"] = self._error
        if self._fields:
            record.update(self._fields)
            if "resource" in self._fields:
                record["resource"] = {**_resource, **self._fields["resource"]}
        if trace is not None:
            if trace.session_id is not None:
                record["session_id"] = trace.session_id
            if trace.user_id is not None:
                record["user_id"] = trace.user_id
            if trace.tags:
                record["tags"] = trace.tags
            if trace.project is not None:
                record["project"] = trace.project
        sink.emit(record)

    # What the app may say about the span while it runs.

    def log(
        self,
        input: Any = None,
        output: Any = None,
        metadata: dict[str, Any] | None = None,
        llm: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Record what went in and out; `metadata`, `llm` and `attributes` add to what is there."""
        if self._ended:
            return
        fields = self._fields
        if input is not None:
            fields["input"] = input
        if output is not None:
            fields["output"] = output
        if metadata is not None:
            _merge(fields, "metadata", metadata)
        if llm is not None:
            _merge(fields, "llm", llm)
        if attributes is not None:
            _merge(fields, "attributes", _attributes(attributes))

    def set_status(self, status: str, message: str | None = None) -> None:
        """`ok`, `error` or `unset`; with `error`, `message` becomes the record's error message."""
        if self._ended or status not in STATUSES:
            return
        self._status = status
        self._error = {"type": "Error", "message": str(message)} if status == "error" and message else None

    def is_recording(self) -> bool:
        """True until the span has ended; always False for the no-op span `current_span()` gives."""
        return not self._ended

    def __repr__(self) -> str:
        return f"Span({self.name!r}, kind={self.kind!r}, trace_id={self.trace_id}, span_id={self.span_id})"


def _merge(fields: dict[str, Any], key: str, values: Any) -> None:
    if not isinstance(values, dict):
        values = {"value": values}
    old = fields.get(key)
    fields[key] = {**old, **values} if old else dict(values)  # never changes a dict the app passed


NOOP_SPAN = Span("noop")
NOOP_SPAN.trace_id, NOOP_SPAN.span_id, NOOP_SPAN._ended = "0" * 32, "0" * 16, True


def span(
    name: str,
    kind: str = "span",
    parent: Span | RemoteParent | None = None,
    **fields: Any,
) -> Span:
    """A span to enter with `with` or `async with`: `with shipper.span("retrieve", kind="retriever") as s:`.

    `parent` defaults to the current span; pass `shipper.extract(headers)` to continue a remote trace.
    `fields` are the record's: input, output, metadata, llm, attributes, otel_kind, events, links,
    resource; and the trace-wide session_id, user_id, tags, project, which apply to the whole trace. An
    unknown keyword raises TypeError, as for any function; an unknown `kind` is recorded as `span`.
    """
    wide = None
    if fields:
        unknown = fields.keys() - SPAN_FIELDS - TRACE_FIELDS
        if unknown:
            raise TypeError(f"shipper.span() got unexpected keyword(s): {', '.join(sorted(unknown))}")
        if fields.keys() & TRACE_FIELDS:
            wide = trace_fields(*(fields.pop(k, None) for k in ("session_id", "user_id", "tags", "project")))
        for key in [k for k, v in fields.items() if v is None]:
            del fields[key]
        if "attributes" in fields:
            fields["attributes"] = _attributes(fields["attributes"])
        for key in ("metadata", "llm"):
            if key in fields and not isinstance(fields[key], dict):
                fields[key] = {"value": fields[key]}
        if fields.get("otel_kind", "internal") not in OTEL_KINDS:
            del fields["otel_kind"]
    return Span(name, kind, parent, fields, wide)


def current_span() -> Span:
    """The span the calling code runs in; outside any, a span that records nothing (`is_recording()`)."""
    return current_span_var.get() or NOOP_SPAN
