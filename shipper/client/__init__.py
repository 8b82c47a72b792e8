"""The client shim: standard library only (orjson when importable), never blocks, never raises."""

from __future__ import annotations

from .config import configure
from .context import trace_context
from .executor import TracedThreadPoolExecutor
from .propagation import extract, inject
from .span import Span, current_span, span
from .traced import traced
from .transport import emit_record, flush, statistics

__all__ = [
    "Span",
    "TracedThreadPoolExecutor",
    "configure",
    "current_span",
    "emit_record",
    "extract",
    "flush",
    "inject",
    "span",
    "statistics",
    "trace_context",
    "traced",
]
