"""Processor `sample`: keep a share of whole traces, decided from the trace id (head), or after the trace (tail).

Head sampling keeps a trace when `hash(seed, trace_id) < rate`, with the hash a keyed BLAKE2b of the
trace id: every span of a trace gets the same decision, on every daemon that shares the `seed`, and a
trace kept at a lower rate is also kept at every higher one. `rules` are tried in order; the first that
matches sets the rate, `rate` covers the rest. Rules look at one span, and spans arrive when they end
(leaves first, the root last), so with rules the first span of a trace this daemon sees picks the rate
and the decision is remembered for `decision_cache` traces: the trace's later spans follow it. (A span
of a trace forgotten by then is decided by its own rule.) With `tail`, rules see the whole trace
instead (see shipper/processors/tail.py). Dropped spans are counted as `sampled`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipper.component import Context
from shipper.processors.match import Match, Predicate, compile_match, describe_match
from shipper.processors.tail import TailConfig
from shipper.record import Record

if TYPE_CHECKING:
    from shipper.processors.tail import TailSampler

__all__ = ["HeadPolicy", "HeadSampler", "SampleConfig", "SampleRule", "sample_processor", "trace_fraction"]

_SCALE = float(1 << 64)


@dataclass(kw_only=True)
class SampleRule(Match):
    """A rate for the spans (and so the traces) this rule matches."""

    rate: float = field(metadata={"min": 0.0, "max": 1.0})


@dataclass(kw_only=True)
class SampleConfig:
    """Head rate, rules and seed; `tail` turns on tail sampling (decide once the trace is complete)."""

    rate: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})
    seed: int = field(default=0, metadata={"min": 0, "max": (1 << 63) - 1})
    rules: list[SampleRule] = field(default_factory=list)
    decision_cache: int = field(default=100_000, metadata={"min": 0})
    tail: TailConfig | None = None


def _hasher(seed: int) -> Callable[[str], int]:
    key = seed.to_bytes(8, "big")
    return lambda trace_id: int.from_bytes(
        hashlib.blake2b(trace_id.encode(), digest_size=8, key=key).digest(), "big")


def trace_fraction(trace_id: str, seed: int = 0) -> float:
    """Where a trace falls in [0, 1) for this seed: the trace is kept when this is below the rate."""
    return _hasher(seed)(trace_id) / _SCALE


class HeadPolicy:
    """The rules and rate of a `sample` config, compiled: which rate a span gets, and the hash test."""

    def __init__(self, config: SampleConfig) -> None:
        self.rules = config.rules
        self.rate = config.rate
        self.seed = config.seed
        self.tests: list[Predicate] = [compile_match(rule) for rule in config.rules]
        self.limits: list[int] = [self._limit(rule.rate) for rule in config.rules]
        self.default_limit = self._limit(config.rate)
        self.hash = _hasher(config.seed)

    @staticmethod
    def _limit(rate: float) -> int:
        return int(rate * _SCALE) if rate < 1.0 else 1 << 64

    def rule_index(self, span: Record) -> int:
        """The index of the first rule matching `span`; len(rules) when none does."""
        for i, test in enumerate(self.tests):
            if test(span):
                return i
        return len(self.tests)

    def keeps(self, trace_id: str, rule: int) -> bool:
        """Whether the trace is kept at the rate of rule `rule` (len(rules): the default rate)."""
        limit = self.limits[rule] if rule < len(self.limits) else self.default_limit
        return self.hash(trace_id) < limit

    def describe(self, span: Record, rule: int | None = None) -> str:
        """Which rule applies to `span` and what it decides, as a sentence for --explain."""
        rule = self.rule_index(span) if rule is None else rule
        fraction = self.hash(span["trace_id"]) / _SCALE
        if rule < len(self.rules):
            spec = self.rules[rule]
            which, rate = f"rule {rule + 1} ({describe_match(spec)})", spec.rate
        else:
            which, rate = "no rule matched, the default rate", self.rate
        verdict = "kept" if self.keeps(span["trace_id"], rule) else "dropped (sampled)"
        relation = "<" if verdict == "kept" else ">="
        return f"{which} applies: rate {rate:g}; trace hash {fraction:.4f} {relation} {rate:g}: {verdict}"


class HeadSampler:
    """Keeps or drops each span by its trace's decision."""

    def __init__(self, config: SampleConfig, ctx: Context) -> None:
        self.counters = ctx.counters
        self.policy = HeadPolicy(config)
        self.capacity = config.decision_cache
        self.decisions: OrderedDict[str, bool] = OrderedDict()
        self.decide = self._remembered if config.rules and config.decision_cache else self._stateless

    def _stateless(self, span: Record) -> bool:
        return self.policy.keeps(span["trace_id"], self.policy.rule_index(span))

    def _remembered(self, span: Record) -> bool:
        trace_id = span["trace_id"]
        keep = self.decisions.get(trace_id)
        if keep is None:
            keep = self.decisions[trace_id] = self.policy.keeps(trace_id, self.policy.rule_index(span))
            if len(self.decisions) > self.capacity:
                self.decisions.popitem(last=False)
        return keep

    def __call__(self, batch: list[Record]) -> list[Record]:
        decide = self.decide
        kept = [span for span in batch if decide(span)]
        self.counters.drop("sampled", len(batch) - len(kept))
        return kept

    def explain(self, span: Record, trace: list[Record]) -> str:
        """Which rule applies to this record and whether its trace is kept."""
        first = trace[0] if trace else span
        if self.decide == self._remembered and first["span_id"] != span["span_id"]:
            return (f"the trace's first span ({first['span_id']}, {first['name']!r}) decides for it: "
                    + self.policy.describe(first))
        return self.policy.describe(span)


def sample_processor(config: SampleConfig, ctx: Context) -> HeadSampler | TailSampler:
    """The `sample` processor's factory: a `HeadSampler`, or a `TailSampler` when the config has `tail`."""
    if config.tail is not None:
        from shipper.processors.tail import TailSampler

        return TailSampler(config, ctx, HeadPolicy(config))
    return HeadSampler(config, ctx)


# The registry's contract: a callable (config, ctx) carrying its Config.
sample_processor.Config = SampleConfig  # type: ignore[attr-defined]
