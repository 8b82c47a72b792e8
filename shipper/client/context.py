"""What is current: the active span and the trace-wide fields, kept in contextvars.

Contextvars make nesting follow the code: an asyncio task inherits the context of the code that created
it, `TracedThreadPoolExecutor` runs work in a copy of the submitter's context, and a thread started
without one begins a new trace.

Trace-wide fields (`session_id`, `user_id`, `tags`, `project`, SPEC §1) live in one `Trace` object that
every span of a trace shares in this process, so each span's record carries them. `trace_context()`
entered outside any span sets them for the traces started inside it; entered inside a span, it also sets
them on that span's trace, so every span of the trace that ends afterwards (the root included) carries
them. Spans that already ended keep what they had: a record is written once.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any

__all__ = ["Trace", "TraceContext", "current_fields", "current_span_var", "trace_context", "trace_fields"]

current_span_var: contextvars.ContextVar[Any] = contextvars.ContextVar("shipper.current_span", default=None)
_fields_var: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("shipper.fields", default=None)


class Trace:
    """One trace as this process sees it: its id and its trace-wide fields, shared by its spans."""

    __slots__ = ("trace_id", "session_id", "user_id", "tags", "project")

    def __init__(
        self,
        trace_id: str = "",
        session_id: str | None = None,
        user_id: str | None = None,
        tags: list[str] | None = None,
        project: str | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.session_id = session_id
        self.user_id = user_id
        self.tags = tags
        self.project = project

    def update(self, other: Trace) -> None:
        """Take `other`'s fields where it has them; tags are added to ours, in order, once each."""
        if other.session_id is not None:
            self.session_id = other.session_id
        if other.user_id is not None:
            self.user_id = other.user_id
        if other.project is not None:
            self.project = other.project
        if other.tags:
            self.tags = other.tags if not self.tags else list(dict.fromkeys([*self.tags, *other.tags]))

    def started(self, trace_id: str) -> Trace:
        """A new trace with these fields (this object stays as it is: it belongs to a context)."""
        return Trace(trace_id, self.session_id, self.user_id, self.tags, self.project)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _tags(tags: Iterable[Any] | str | None) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str):
        return [tags]
    return [str(tag) for tag in tags]


def current_fields() -> Trace | None:
    """The trace-wide fields set by the `trace_context()` blocks around this code, if any."""
    return _fields_var.get()


class TraceContext:
    """A `with` (or `async with`) block whose trace-wide fields land on every span of its traces."""

    __slots__ = ("fields", "_token")

    def __init__(self, fields: Trace) -> None:
        self.fields = fields
        self._token: contextvars.Token[Trace | None] | None = None

    def __enter__(self) -> TraceContext:
        outer = _fields_var.get()
        merged = Trace()
        if outer is not None:
            merged.update(outer)
        merged.update(self.fields)
        self._token = _fields_var.set(merged)
        span = current_span_var.get()
        if span is not None:
            span._trace.update(self.fields)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            try:
                _fields_var.reset(self._token)
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
) -> Trace:
    """Trace-wide fields as strings (None where not given); a single string for `tags` is one tag."""
    return Trace("", _text(session_id), _text(user_id), _tags(tags), _text(project))
