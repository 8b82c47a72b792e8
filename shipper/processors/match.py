"""Span matchers shared by `sample`, `tail` and `filter` rules: service, name, kind, project, status, attributes.

A rule's conditions are ANDed; each string condition is a glob (`*`, `?`, `[abc]`) or a list of globs
(ORed), compared case-sensitively with the span's field (a missing field is the empty string, `kind`
defaults to `span`, `status` to `unset`). `attributes` and `metadata` map a key to the value wanted: a
string is a glob against the value's text, any other scalar must be equal, and `"*"` only asks that the
key be present. Everything is compiled once, at construction; `compile_match` returns a plain predicate.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shipper.record import KINDS, STATUSES, Record

__all__ = ["Match", "Predicate", "compile_match", "describe_match"]

Predicate = Callable[[Record], bool]

Globs = str | list[str] | None

_MATCH_KEYS = ("service", "name", "kind", "project", "status")


@dataclass(kw_only=True)
class Match:
    """What a rule matches; every condition given must hold (an empty rule matches every span)."""

    service: Globs = None
    name: Globs = None
    kind: Globs = None
    project: Globs = None
    status: Globs = None
    attributes: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def check(self) -> list[str]:
        problems = []
        for key, known in (("kind", KINDS), ("status", STATUSES)):
            for value in _as_list(getattr(self, key)):
                if isinstance(value, str) and not _is_glob(value) and value not in known:
                    problems.append(f"{key}: {value!r} is not a {key}; expected one of {', '.join(sorted(known))}")
        for key in ("attributes", "metadata"):
            for name, value in (getattr(self, key) or {}).items():
                if not isinstance(value, (str, int, float, bool)):
                    problems.append(f"{key}.{name}: expected a string (glob), number or true/false to compare "
                                    f"with, got {type(value).__name__}")
        return problems


def _as_list(value: Globs) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list) else []


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob(patterns: list[str]) -> Callable[[str], bool]:
    if not any(_is_glob(p) for p in patterns):
        wanted = frozenset(patterns)
        return wanted.__contains__
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
    return lambda text: regex.match(text) is not None


_DEFAULTS = {"kind": "span", "status": "unset"}


def _field_test(key: str, patterns: list[str]) -> Predicate:
    test = _glob(patterns)
    default = _DEFAULTS.get(key, "")
    return lambda span: test(span.get(key) or default)


def _value_test(section: str, key: str, wanted: Any) -> Predicate:
    if wanted == "*":
        return lambda span: key in (span.get(section) or {})
    if isinstance(wanted, str):
        test = _glob([wanted])

        def text(span: Record) -> bool:
            value = (span.get(section) or {}).get(key)
            return value is not None and test(value if isinstance(value, str) else str(value))
        return text
    return lambda span: (span.get(section) or {}).get(key, _MISSING) == wanted


_MISSING = object()


def compile_match(rule: Match) -> Predicate:
    """One predicate for a rule: every condition compiled once."""
    tests: list[Predicate] = []
    for key in _MATCH_KEYS:
        patterns = _as_list(getattr(rule, key))
        if patterns:
            tests.append(_field_test(key, patterns))
    for section in ("attributes", "metadata"):
        for key, wanted in getattr(rule, section).items():
            tests.append(_value_test(section, key, wanted))
    if not tests:
        return lambda span: True
    if len(tests) == 1:
        return tests[0]
    return lambda span: all(test(span) for test in tests)


def describe_match(rule: Match) -> str:
    """The rule's conditions as text, for `shipper check --explain`."""
    parts = [f"{key}={getattr(rule, key)!r}" for key in _MATCH_KEYS if getattr(rule, key) is not None]
    for section in ("attributes", "metadata"):
        parts.extend(f"{section}.{k}={v!r}" for k, v in getattr(rule, section).items())
    return ", ".join(parts) or "any span"
