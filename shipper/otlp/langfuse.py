"""Langfuse's own attribute names (`langfuse.*`), defined once for its exporter and for `decode`.

`shipper.exporters.langfuse` writes them; `shipper.otlp.decode` lifts them back into record fields when a
span arrives from Langfuse's SDK (or from another shipper).
"""

from __future__ import annotations

__all__ = [
    "COMPLETION_START",
    "COST",
    "INPUT",
    "KINDS",
    "LEVEL",
    "METADATA",
    "MODEL",
    "OBSERVATION_METADATA",
    "OBSERVATION_TYPE",
    "OUTPUT",
    "PARAMS",
    "SESSION",
    "STATUS_MESSAGE",
    "TAGS",
    "TRACE_METADATA",
    "TRACE_NAME",
    "TYPE",
    "USAGE",
    "USAGE_DETAILS",
    "USAGE_KEYS",
    "USER",
]

TYPE = "langfuse.observation.type"
INPUT, OUTPUT = "langfuse.observation.input", "langfuse.observation.output"
MODEL, PARAMS = "langfuse.observation.model.name", "langfuse.observation.model.parameters"
USAGE, COST = "langfuse.observation.usage_details", "langfuse.observation.cost_details"
COMPLETION_START = "langfuse.observation.completion_start_time"
LEVEL, STATUS_MESSAGE = "langfuse.observation.level", "langfuse.observation.status_message"
TRACE_NAME = "langfuse.trace.name"
SESSION, USER, TAGS = "langfuse.session.id", "langfuse.user.id", "langfuse.trace.tags"
TRACE_METADATA, OBSERVATION_METADATA = "langfuse.trace.metadata.", "langfuse.observation.metadata."
METADATA = (TRACE_METADATA, OBSERVATION_METADATA)
"""Prefixes: `<prefix><key>` holds one metadata entry."""

OBSERVATION_TYPE = {
    "llm": "generation", "embedding": "embedding", "agent": "agent", "tool": "tool", "chain": "chain",
    "retriever": "retriever", "guardrail": "guardrail", "evaluator": "evaluator",
}
"""Record kind → `langfuse.observation.type`; other kinds are plain `span`s."""
KINDS = {lf: kind for kind, lf in OBSERVATION_TYPE.items()}
"""`langfuse.observation.type` → record kind (the reverse of OBSERVATION_TYPE)."""
USAGE_KEYS = {"input": "input_tokens", "output": "output_tokens", "total": "total_tokens",
              "cache_read_input_tokens": "cache_read_tokens", "input_cached_tokens": "cache_read_tokens",
              "reasoning_tokens": "reasoning_tokens", "output_reasoning_tokens": "reasoning_tokens"}
"""Keys of `langfuse.observation.usage_details` → record `llm.usage` keys."""
USAGE_DETAILS = {"input_tokens": "input", "output_tokens": "output", "total_tokens": "total",
                 "cache_read_tokens": "input_cached_tokens", "reasoning_tokens": "output_reasoning_tokens"}
"""Record `llm.usage` keys → the `usage_details` keys the exporter writes (the names Langfuse's prices use)."""
