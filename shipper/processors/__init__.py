"""Processors: callables mapping a batch of spans to a batch (filter, redact, truncate, sample...)."""
