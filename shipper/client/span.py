"""A span: timed on entry and exit, nested through contextvars, turned into one record when it ends."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

from . import transport
from .context import TraceFields, current_span_var, fields_var, merged, trace_fields
from .fields import KINDS, OTEL_KINDS, STATUSES, TRACE_FIELDS
from .ids import getrandbits
from .propagation import RemoteParent

__all__ = ["KINDS", "NOOP_SPAN", "Span", "current_span", "error_of", "span"]

# Keywords span() takes besides name, kind and parent: the record's per-span fields, then the trace-wide
# ones, which go to the span's trace (as trace_context() would put them).
SPAN_FIELDS = frozenset(
    ["input", "output", "metadata", "llm", "attributes", "otel_kind", "events", "links", "resource"]
)
_PLAIN_FIELDS = frozenset(["input", "output", "metadata", "llm", "events", "links"])  # kept as given
_TRACE_KEYS = frozenset(TRACE_FIELDS)  # in trace_fields()'s order as a tuple
_SCALARS = (str, bool, int, float)
_NO_FIELDS: dict[str, Any] = {}  # never written to

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
    """One step of a trace: `with shipper.span("retrieve", kind="retriever") as s:` (or `async with`).

    `parent` defaults to the current span; pass `shipper.extract(headers)` to continue a remote trace.
    `fields` are the record's: input, output, metadata, llm, attributes, otel_kind, events, links,
    resource; and the trace-wide session_id, user_id, tags, project, which apply to the whole trace. An
    unknown keyword raises TypeError, as for any call; an unknown `kind` is recorded as `span`.

    The spans of a trace share one trace state, a one-item list `[TraceFields | None]` holding the
    trace-wide fields (the cheapest shared cell: a root span makes one), and copy them into their records
    when they end. Spans point to it, never it to them, so a finished span is freed by reference counting
    alone (a root span pointing to itself made every trace cyclic garbage). Before a span starts, `_wide`
    holds the trace-wide fields given to it.
    """

    __slots__ = ("name", "kind", "trace_id", "span_id", "start_ns", "_parent", "_trace", "_wide", "_fields",
                 "_status", "_token", "_ended")
    name: str
    kind: str
    trace_id: str
    span_id: str
    start_ns: int
    _parent: Span | RemoteParent | None
    _trace: list[TraceFields | None] | None
    _wide: TraceFields | None
    _fields: dict[str, Any] | None
    _status: str | None
    _token: Any
    _ended: bool

    def __init__(
        self,
        name: str,
        kind: str = "span",
        parent: Span | RemoteParent | None = None,
        **fields: Any,
    ) -> None:
        _setup(self, name, kind, parent, fields)

    def __enter__(self) -> Span:
        parent = self._parent or current_span_var.get()
        if parent is None:  # a new trace (the common case first: `_parent` is None already)
            wide = fields_var.get()
            if self._wide is not None:  # span(session_id=...): for the whole trace
                wide, self._wide = merged(wide, self._wide), None
            self._trace = [wide]
            self.trace_id = (getrandbits(128) or 1).to_bytes(16, "big").hex()  # = ids.new_trace_id()
        elif type(parent) is Span and parent._trace is not None:
            self._parent = parent
            self._trace = trace = parent._trace
            self.trace_id = parent.trace_id
            if self._wide is not None:
                trace[0], self._wide = merged(trace[0], self._wide), None
        else:
            wide = fields_var.get()
            if type(parent) is Span:  # the no-op span, or a span never entered: a new trace
                self._parent = None
                self.trace_id = (getrandbits(128) or 1).to_bytes(16, "big").hex()
            else:  # a RemoteParent from extract(): its trace, its baggage, then our trace_context() blocks
                self._parent = parent
                self.trace_id = parent.trace_id
                wide = merged(parent.fields, wide)  # type: ignore[union-attr]
            self._trace = [wide if self._wide is None else merged(wide, self._wide)]
            self._wide = None
        self.span_id = (getrandbits(64) or 1).to_bytes(8, "big").hex()  # = ids.new_span_id(), inline
        self._token = current_span_var.set(self)
        self.start_ns = _time_ns()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        end_ns = _time_ns()
        try:
            current_span_var.reset(self._token)
        except Exception:  # ended in another context than it started in (or never entered)
            if current_span_var.get() is self:
                current_span_var.set(self._parent if type(self._parent) is Span else None)
        if self._ended:
            return
        self._ended = True
        try:  # the record, built inline: this is the per-span path
            sink = transport._active or transport.active()
            fields = self._fields
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
                **(fields or _NO_FIELDS),  # with `error` if set_status("error", message) was called
            }
            if fields and "resource" in fields:
                record["resource"] = {**_resource, **fields["resource"]}
            if self._parent is not None:
                record["parent_id"] = self._parent.span_id
            if exc_type is not None and exc_type is not GeneratorExit:
                record["status"] = "error"
                record["error"] = error_of(exc)  # type: ignore[arg-type]
            elif self._status is not None:
                record["status"] = self._status
            wide = self._trace[0]  # type: ignore[index]
            if wide is not None:
                if wide.session_id is not None:
                    record["session_id"] = wide.session_id
                if wide.user_id is not None:
                    record["user_id"] = wide.user_id
                if wide.tags:
                    record["tags"] = wide.tags
                if wide.project is not None:
                    record["project"] = wide.project
            sink.emit(record)
        except Exception:  # nothing of ours may reach the app
            pass

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _start(self) -> None:
        """Start without becoming current (for generators, which are current only while they run)."""
        self.__enter__()
        current_span_var.reset(self._token)

    def _finish(self, exc: BaseException | None) -> None:
        """End a span started with `_start()`: current for a moment, then exited like any other."""
        self._token = current_span_var.set(self)
        self.__exit__(None if exc is None else type(exc), exc, None)

    def _add_trace_fields(self, fields: TraceFields) -> None:
        trace = self._trace
        if trace is not None:
            trace[0] = merged(trace[0], fields)

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
        if fields is None:
            fields = self._fields = {}
        if input is not None:
            fields["input"] = input
        if output is not None:
            fields["output"] = output
        if metadata is not None:
            _merge(fields, "metadata", metadata)
        if llm is not None:
            if type(llm) is dict:  # _merge(), inline: the common case
                old = fields.get("llm")
                fields["llm"] = {**old, **llm} if old else dict(llm)  # never changes a dict the app passed
            else:
                _merge(fields, "llm", llm)
        if attributes is not None:
            _merge(fields, "attributes", _attributes(attributes))

    def set_status(self, status: str, message: str | None = None) -> None:
        """`ok`, `error` or `unset`; with `error`, `message` becomes the record's error message."""
        if self._ended or status not in STATUSES:
            return
        self._status = status
        fields = self._fields
        if status == "error" and message:
            if fields is None:
                fields = self._fields = {}
            fields["error"] = {"type": "Error", "message": str(message)}
        elif fields:
            fields.pop("error", None)

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


_new = object.__new__


def _setup(span: Span, name: Any, kind: str, parent: Any, fields: dict[str, Any]) -> None:
    """Set every slot of a span not entered yet (Span.__init__ and span() share it)."""
    span.name = name if type(name) is str and 0 < len(name) <= 1024 else (str(name)[:1024] or "unnamed")
    span.kind = kind if kind in KINDS else "span"
    span.trace_id = span.span_id = ""
    span.start_ns = 0
    span._parent = parent
    span._trace = span._wide = span._status = span._token = None
    span._ended = False
    span._fields = _checked(fields, span) if fields else None


def span(
    name: str,
    kind: str = "span",
    parent: Span | RemoteParent | None = None,
    *,
    input: Any = None,
    output: Any = None,
    metadata: Any = None,
    llm: Any = None,
    **fields: Any,
) -> Span:
    """`shipper.span(...)`: a new `Span` (the same arguments as the class).

    A function rather than the class: calling a class with keywords goes through its generic `tp_call`
    (an argument tuple and dict, then `__init__`), and the common fields as named parameters spare the
    keyword dict its checks; about 400 ns a span less in all. The other fields take `_checked`'s path.
    """
    new = _new(Span)
    new.name = name if type(name) is str and 0 < len(name) <= 1024 else (str(name)[:1024] or "unnamed")
    new.kind = kind if kind in KINDS else "span"
    new.trace_id = new.span_id = ""
    new.start_ns = 0
    new._parent = parent
    new._trace = new._wide = new._status = new._token = None
    new._ended = False
    if not fields and (llm is None or type(llm) is dict) and (metadata is None or type(metadata) is dict):
        plain: dict[str, Any] = {}
        if input is not None:
            plain["input"] = input
        if output is not None:
            plain["output"] = output
        if metadata is not None:
            plain["metadata"] = metadata
        if llm is not None:
            plain["llm"] = llm
        new._fields = plain or None
        return new
    fields.update({key: value for key, value in (("input", input), ("output", output), ("metadata", metadata),
                                                  ("llm", llm)) if value is not None})
    new._fields = _checked(fields, new) if fields else None
    return new


def _plain_span(name: str, kind: str) -> Span:
    """A span with a checked name and kind and no fields yet: `@traced`'s, one keyword parse less."""
    new = _new(Span)
    new.name = name
    new.kind = kind
    new.trace_id = new.span_id = ""
    new.start_ns = 0
    new._parent = new._trace = new._wide = new._status = new._token = new._fields = None
    new._ended = False
    return new


NOOP_SPAN = Span("noop")
NOOP_SPAN.trace_id, NOOP_SPAN.span_id, NOOP_SPAN._ended = "0" * 32, "0" * 16, True


def _checked(fields: dict[str, Any], span: Span) -> dict[str, Any] | None:
    """span()'s keywords, checked once: per-span fields kept, trace-wide ones set aside on the span."""
    if fields.keys() <= _PLAIN_FIELDS:  # the common case, in a few steps
        llm, metadata = fields.get("llm"), fields.get("metadata")
        if (llm is None or type(llm) is dict) and (metadata is None or type(metadata) is dict):
            for value in fields.values():  # `is`, never `==`: a numpy array has no truth value
                if value is None:
                    break
            else:
                return fields
    unknown = fields.keys() - SPAN_FIELDS - _TRACE_KEYS
    if unknown:
        raise TypeError(f"shipper.span() got unexpected keyword(s): {', '.join(sorted(unknown))}")
    if fields.keys() & _TRACE_KEYS:
        span._wide = trace_fields(*(fields.pop(key, None) for key in TRACE_FIELDS))
    for key in [k for k, v in fields.items() if v is None]:
        del fields[key]
    if "attributes" in fields:
        fields["attributes"] = _attributes(fields["attributes"])
    for key in ("metadata", "llm"):
        if key in fields and not isinstance(fields[key], dict):
            fields[key] = {"value": fields[key]}
    if fields.get("otel_kind", "internal") not in OTEL_KINDS:
        del fields["otel_kind"]
    return fields or None


def current_span() -> Span:
    """The span the calling code runs in; outside any, a span that records nothing (`is_recording()`)."""
    return current_span_var.get() or NOOP_SPAN
