"""Processor `filter`: drop spans matching rules, or keep only those matching rules or looking like LLM work.

A span is dropped (counted `filtered`) when it matches any `drop` rule. Otherwise, when a keep-only
condition is set (`keep` rules or `ai_only`), the span is kept only if it matches a `keep` rule, or is
LLM-like under `ai_only` (its kind is one of `ai_kinds`, it has an `llm` object, or an attribute key
starts with `gen_ai.` or `llm.`), or is its trace's root while `keep_roots` is on (the default: a backend
hides a trace whose root is missing). `drop` rules apply to roots too; to drop whole traces, use
`sample` rules with `rate: 0`. Rules use the matchers of shipper/processors/match.py. Spans whose
parent was filtered out keep their `parent_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipper.component import Context
from shipper.processors.match import Match, Predicate, compile_match, describe_match
from shipper.record import KINDS, Record

__all__ = ["FilterConfig", "FilterProcessor", "is_ai_span"]

AI_KINDS = sorted(KINDS - {"span", "task"})
_AI_PREFIXES = ("gen_ai.", "llm.")


@dataclass(kw_only=True)
class FilterConfig:
    """Drop rules, keep-only rules, and the LLM-only switch."""

    drop: list[Match] = field(default_factory=list)
    keep: list[Match] = field(default_factory=list)
    ai_only: bool = False
    ai_kinds: list[str] = field(default_factory=lambda: list(AI_KINDS))
    keep_roots: bool = True

    def check(self) -> list[str]:
        problems = [f"ai_kinds: {kind!r} is not a kind; expected some of {', '.join(sorted(KINDS))}"
                    for kind in self.ai_kinds if isinstance(kind, str) and kind not in KINDS]
        if not self.drop and not self.keep and not self.ai_only:
            problems.append("drop: the filter does nothing; give `drop` rules, `keep` rules or `ai_only: true`")
        return problems


def is_ai_span(span: Record, kinds: frozenset[str] = frozenset(AI_KINDS)) -> bool:
    """Whether a span looks like LLM work: an AI kind, an `llm` object, or `gen_ai.*` / `llm.*` attributes."""
    if span.get("kind", "span") in kinds or span.get("llm") is not None:
        return True
    attributes = span.get("attributes")
    if not attributes:
        return False
    return any(key.startswith(_AI_PREFIXES) for key in attributes)


def _is_root(span: Record) -> bool:
    return span.get("parent_id") is None


class FilterProcessor:
    """Keeps the spans the rules let through; counts the rest as `filtered`."""

    Config = FilterConfig

    def __init__(self, config: FilterConfig, ctx: Context) -> None:
        self.config = config
        self.counters = ctx.counters
        self.drops: list[Predicate] = [compile_match(rule) for rule in config.drop]
        kinds = frozenset(config.ai_kinds)
        self.keeps: list[tuple[str, Predicate]] = [
            (f"keep rule {i + 1} ({describe_match(rule)}) matches", compile_match(rule))
            for i, rule in enumerate(config.keep)
        ]
        if config.ai_only:
            self.keeps.append(("it is LLM-like (ai_only)", lambda span: is_ai_span(span, kinds)))
        if self.keeps and config.keep_roots:
            self.keeps.insert(0, ("it is the trace's root (keep_roots)", _is_root))
        if not self.keeps:
            self.keeps.append(("no keep-only condition is set", lambda span: True))
        tests = [test for _, test in self.keeps]
        drops = self.drops
        self.passes: Predicate = lambda span: not any(d(span) for d in drops) and any(t(span) for t in tests)

    def __call__(self, batch: list[Record]) -> list[Record]:
        passes = self.passes
        kept = [span for span in batch if passes(span)]
        self.counters.drop("filtered", len(batch) - len(kept))
        return kept

    def explain(self, span: Record, trace: list[Record]) -> str:
        """Which rule decides this record, and what happens to it."""
        for i, test in enumerate(self.drops):
            if test(span):
                return f"drop rule {i + 1} ({describe_match(self.config.drop[i])}) matches: dropped (filtered)"
        for why, test in self.keeps:
            if test(span):
                return f"kept: {why}"
        return "dropped (filtered): no keep rule matches" + (" and it is not LLM-like" if self.config.ai_only else "")
