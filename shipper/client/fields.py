"""The record's vocabulary (docs/record.md), defined once: the client writes it, the daemon validates against it.

Standard library only, like the rest of the client, so `shipper.record` (the daemon's validation),
`shipper.otlp` (the OTLP mapping) and the integrations import these names instead of repeating them.
"""

from __future__ import annotations

__all__ = ["KINDS", "OTEL_KINDS", "STATUSES", "TRACE_FIELDS", "USAGE_KEYS"]

KINDS = frozenset(
    ["llm", "chain", "tool", "agent", "embedding", "retriever", "reranker", "guardrail", "evaluator",
     "prompt", "task", "span"]
)
"""A record's `kind`; anything else is recorded as `span` by the client and rejected by the daemon."""
STATUSES = frozenset(["ok", "error", "unset"])
OTEL_KINDS = frozenset(["internal", "server", "client", "producer", "consumer"])
TRACE_FIELDS = ("session_id", "user_id", "tags", "project")
"""The trace-wide fields: set for a whole trace (`trace_context()`), copied onto each of its records."""
USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "reasoning_tokens")
"""The token counts `llm.usage` may hold."""
