"""Helpers for processors that rewrite the values of a record: which fields are off limits, what changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["STRUCTURAL", "changed_paths", "map_items"]

STRUCTURAL = frozenset({"v", "trace_id", "span_id", "parent_id", "kind", "otel_kind", "start_ns", "end_ns",
                        "status"})
"""Record fields that are validated ids, enums and numbers: never rewritten by redact or truncate."""


def changed_paths(old: Any, new: Any, path: str = "") -> list[tuple[str, Any]]:
    """The key paths (`input[0].content`, `metadata.api_key`) where `new` differs from `old`, with new values.

    Relies on copy on write: a part that did not change is the very same object in both.
    """
    if old is new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any]] = []
        for key, value in new.items():
            where = f"{path}.{key}" if path else str(key)
            if key in old:
                out.extend(changed_paths(old[key], value, where))
            else:
                out.append((where, value))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(changed_paths(a, b, f"{path}[{i}]"))
        return out
    return [] if old == new else [(path, new)]


def map_items(items: list[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """`fn` applied to each item, copy on write: `items` itself when `fn` returned every item unchanged."""
    changed = None
    for i, item in enumerate(items):
        new = fn(item)
        if new is not item:
            if changed is None:
                changed = list(items)
            changed[i] = new
    return items if changed is None else changed
