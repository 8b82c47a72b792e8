"""What is current: the active span and the trace-wide fields, kept in contextvars.

Contextvars make nesting follow the code: an asyncio task inherits the context of the code that created
it, `TracedThreadPoolExecutor` runs work in a copy of the submitter's context, and a thread started
without one begins a new trace.

Trace-wide fields (`session_id`, `user_id`, `tags`, `project`, docs/record.md) belong to a trace's local root
span, and every span of the trace copies them into its record when it ends. `trace_context()` entered
outside any span sets them for the traces started inside it; entered inside a span, it also sets them on
that span's trace, so every span of the trace that ends afterwards (the root included) carries them.
Spans that already ended keep what they had: a record is written once. `TraceFields` values are never
changed in place (an update makes a new one), so contexts and traces can share them freely.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any

from .fields import TRACE_FIELDS

__all__ = ["TraceContext", "TraceFields", "current_fields", "current_span_var", "fields_var", "merged",
           "trace_context", "trace_fields"]

current_span_var: contextvars.ContextVar[Any] = contextvars.ContextVar("shipper.current_span", default=None)
fields_var: contextvars.ContextVar[TraceFields | None] = contextvars.ContextVar("shipper.wide", default=None)


class TraceFields:
    """The trace-wide fields of a trace (None where not set); never changed once made."""

    __slots__ = TRACE_FIELDS

    def __init__(
        self,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: list[str] | None = None,
        project: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.tags = tags
        self.project = project


def merged(base: TraceFields | None, top: TraceFields | None) -> TraceFields | None:
    """`top` over `base`: its values win where it has them; tags are added to base's, in order, once each."""
    if base is None or top is None:
        return top if base is None else base
    tags = top.tags or base.tags
    if base.tags and top.tags:
        tags = list(dict.fromkeys(base.tags + top.tags))
    return TraceFields(
        top.session_id if top.session_id is not None else base.session_id,
        top.user_id if top.user_id is not None else base.user_id,
        tags,
        top.project if top.project is not None else base.project,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _tags(tags: Iterable[Any] | str | None) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str):
        return [tags]
    return [str(tag) for tag in tags]


def current_fields() -> TraceFields | None:
    """The trace-wide fields set by the `trace_context()` blocks around this code, if any."""
    return fields_var.get()


class TraceContext:
    """A `with` (or `async with`) block whose trace-wide fields land on every span of its traces."""

    __slots__ = ("fields", "_token")

    def __init__(self, fields: TraceFields) -> None:
        self.fields = fields
        self._token: contextvars.Token[TraceFields | None] | None = None

    def __enter__(self) -> TraceContext:
        self._token = fields_var.set(merged(fields_var.get(), self.fields))
        span = current_span_var.get()
        if span is not None:
            span._add_trace_fields(self.fields)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            try:
                fields_var.reset(self._token)
            except ValueError:  # left in another context than the one it was entered in
                pass
            self._token = None

    async def __aenter__(self) -> TraceContext:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)


def trace_context(
    session_id: str | None = None,
    user_id: str | None = None,
    tags: Iterable[str] | str | None = None,
    project: str | None = None,
) -> TraceContext:
    """Set trace-wide fields for the spans inside the block: `with shipper.trace_context(user_id="u1"):`.

    Nested blocks add to the outer ones (inner values win; tags accumulate). Values are turned into
    strings; a single string for `tags` is one tag. Works with `async with` too.
    """
    return TraceContext(trace_fields(session_id, user_id, tags, project))


def trace_fields(
    session_id: Any = None, user_id: Any = None, tags: Iterable[Any] | str | None = None, project: Any = None
) -> TraceFields:
    """Trace-wide fields as strings (None where not given); a single string for `tags` is one tag."""
    return TraceFields(_text(session_id), _text(user_id), _tags(tags), _text(project))
