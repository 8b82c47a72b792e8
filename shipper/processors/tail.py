"""Tail sampling for `sample.tail`: hold each trace until it is complete, then keep it whole or drop it whole.

A trace is held from its first span until its root span (no `parent_id`) arrives or `decision_wait`
has passed since that first span, then decided once: kept whole when any span failed (`keep_errors`),
the trace lasted longer than `slower_than` (latest end minus earliest start), its `llm.cost_usd` sum is
over `cost_over`, its token sum (`llm.usage.total_tokens`, else input + output) is over `tokens_over`,
or any span matches one of `rules`; otherwise the head `rules`/`rate` of the `sample` processor decide,
with the rules now seeing every span of the trace (the first rule, in order, that matches any span).

Memory is bounded: held spans are kept serialized (orjson), and `max_traces` / `max_bytes` cap what is
held; past either bound the oldest trace is decided early, with what has arrived of it, never dropped
unseen. (Measured: a held trace costs its spans' JSON size plus about 350 bytes; `held_bytes` counts
400, so the bound is conservative.) Decisions are remembered for `decision_cache` traces (about 170
bytes each, outside `max_bytes`), so spans arriving after their trace was decided follow it. Counters: `held_traces`/`held_bytes` (live), `decided_root`, `decided_wait`,
`decided_early`, `kept_<reason>` per trace, and dropped spans under `sampled`.

What a crash loses: nothing that a receiver can re-deliver. Held spans live only in memory, so the
pipeline defers committing receiver input (spool offsets, Kafka offsets) until no trace begun before
that input is still held (`holding_since`); after a `kill -9` the spool or Kafka gives the held traces
again (at least once; commits lag by up to `decision_wait`). The OTLP receivers' commit is their
answer, and a sender cannot wait `decision_wait` for it, so they are committed once their records are
queued or held (`answers_senders`, shipper.component). Input that cannot be re-delivered (the socket,
OTLP) is lost if held at a crash: at most `max_bytes`, the traces begun within the last `decision_wait`. A clean stop (SIGTERM)
and a reload decide and release everything held first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.component import Context
from shipper.processors.match import Match, compile_match, describe_match
from shipper.record import Record
from shipper.values import ByteSize, Duration

__all__ = ["TailConfig", "TailSampler"]

TRACE_OVERHEAD = 400
"""Bytes a held trace costs beyond its serialized spans (index entry, ids, bookkeeping), measured."""
SPAN_OVERHEAD = 40
"""Bytes each held span costs beyond its serialized size (bytes object header, list slot)."""


@dataclass(kw_only=True)
class TailConfig:
    """When a held trace is kept whole regardless of the head rate, and the memory it may take."""

    decision_wait: Duration = field(default=30.0, metadata={"min": 0.0})
    keep_errors: bool = True
    slower_than: Duration | None = field(default=None, metadata={"min": 0.0})
    cost_over: float | None = field(default=None, metadata={"min": 0.0})
    tokens_over: int | None = field(default=None, metadata={"min": 0})
    rules: list[Match] = field(default_factory=list)
    max_traces: int = field(default=50_000, metadata={"min": 1})
    max_bytes: ByteSize = field(default=128 * 1024 * 1024, metadata={"min": 64 * 1024})


class _Held:
    """One trace waiting for its decision, with the figures the decision needs."""

    __slots__ = ("spans", "size", "born", "start", "end", "error", "cost", "tokens", "matched", "rule", "root")

    def __init__(self, born: float, rule: int) -> None:
        self.spans: list[bytes] = []
        self.size = TRACE_OVERHEAD
        self.born = born
        self.start = 1 << 63
        self.end = 0
        self.error = False
        self.cost = 0.0
        self.tokens = 0
        self.matched = False
        self.rule = rule
        self.root = False


def _tokens(llm: dict[str, Any]) -> int:
    usage = llm.get("usage") or {}
    total = usage.get("total_tokens")
    if total is None:
        total = (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
    return total


class TailSampler:
    """Holds traces, decides each once, releases kept traces whole."""

    def __init__(self, config: Any, ctx: Context, head: Any) -> None:
        tail: TailConfig = config.tail
        self.tail = tail
        self.head = head
        self.counters = ctx.counters
        self.wait = tail.decision_wait
        self.max_traces = tail.max_traces
        self.max_bytes = tail.max_bytes
        self.cache_size = config.decision_cache
        self.slower_than = int(tail.slower_than * 1e9) if tail.slower_than is not None else 1 << 63
        self.cost_over = tail.cost_over if tail.cost_over is not None else float("inf")
        self.tokens_over = tail.tokens_over if tail.tokens_over is not None else 1 << 63
        self.keep_errors = tail.keep_errors
        self.rules = [compile_match(rule) for rule in tail.rules]
        self.no_rule = len(head.tests)
        self.held: OrderedDict[str, _Held] = OrderedDict()
        self.held_bytes = 0
        self.decided: OrderedDict[str, bool] = OrderedDict()
        self.clock = time.monotonic

    def statistics(self) -> dict[str, int]:
        """Live figures: traces and bytes held."""
        return {"held_traces": len(self.held), "held_bytes": self.held_bytes}

    def holding_since(self) -> float | None:
        """When (`clock`, monotonic) the oldest trace still held began, or None when nothing is held: input
        handled before then holds nothing here, so the pipeline may commit it (see pipeline._handle)."""
        for held in self.held.values():  # insertion order: the first is the oldest
            return held.born
        return None

    # -- intake -------------------------------------------------------------------------------------

    def __call__(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        ready: list[str] = []
        now = self.clock()
        late_dropped = 0
        for span in batch:
            trace_id = span["trace_id"]
            decided = self.decided.get(trace_id)
            if decided is not None:
                self.counters.add("late_spans")
                if decided:
                    out.append(span)
                else:
                    late_dropped += 1
                continue
            held = self.held.get(trace_id)
            if held is None:
                held = self.held[trace_id] = _Held(now, self.no_rule)
                self.held_bytes += held.size
            self._add(held, span)
            if held.root:
                ready.append(trace_id)
        self.counters.drop("sampled", late_dropped)
        for trace_id in ready:
            held = self.held.pop(trace_id, None)
            if held is not None:
                out.extend(self._decide(trace_id, held, "decided_root"))
        out.extend(self._evict())
        return out

    def _add(self, held: _Held, span: Record) -> None:
        blob = memoryview(orjson.dumps(span)).tobytes()  # orjson's own bytes keep a 4 KiB buffer each
        held.spans.append(blob)
        size = len(blob) + SPAN_OVERHEAD
        held.size += size
        self.held_bytes += size
        start, end = span["start_ns"], span["end_ns"]
        if start < held.start:
            held.start = start
        if end > held.end:
            held.end = end
        if span.get("status") == "error" or span.get("error") is not None:
            held.error = True
        llm = span.get("llm")
        if llm is not None:
            held.cost += llm.get("cost_usd") or 0.0
            held.tokens += _tokens(llm)
        if not held.matched and self.rules:
            held.matched = any(test(span) for test in self.rules)
        if held.rule:
            held.rule = min(held.rule, self.head.rule_index(span))
        if span.get("parent_id") is None:
            held.root = True

    def _evict(self) -> list[Record]:
        out: list[Record] = []
        while self.held and (len(self.held) > self.max_traces or self.held_bytes > self.max_bytes):
            trace_id, held = self.held.popitem(last=False)
            out.extend(self._decide(trace_id, held, "decided_early"))
        return out

    # -- decisions ----------------------------------------------------------------------------------

    def reason(self, trace_id: str, held: _Held) -> str | None:
        """Why the trace is kept (`error`, `slow`, `cost`, `tokens`, `rule`, `rate`), or None: dropped."""
        if held.error and self.keep_errors:
            return "error"
        if held.end - held.start > self.slower_than:
            return "slow"
        if held.cost > self.cost_over:
            return "cost"
        if held.tokens > self.tokens_over:
            return "tokens"
        if held.matched:
            return "rule"
        return "rate" if self.head.keeps(trace_id, held.rule) else None

    def _decide(self, trace_id: str, held: _Held, how: str) -> list[Record]:
        self.held_bytes -= held.size
        self.counters.add(how)
        reason = self.reason(trace_id, held)
        self.decided[trace_id] = reason is not None
        if len(self.decided) > self.cache_size:
            self.decided.popitem(last=False)
        if reason is None:
            self.counters.drop("sampled", len(held.spans))
            return []
        self.counters.add(f"kept_{reason}")
        return [orjson.loads(blob) for blob in held.spans]

    def flush(self, force: bool = False) -> list[Record]:
        """Decide the traces held longer than `decision_wait` (every trace when `force`)."""
        out: list[Record] = []
        deadline = self.clock() - self.wait
        while self.held:
            trace_id, held = next(iter(self.held.items()))
            if not force and held.born > deadline:
                break
            self.held.popitem(last=False)
            out.extend(self._decide(trace_id, held, "decided_wait"))
        return out

    def close(self) -> None:
        """Forget what is held (the pipeline has flushed it first)."""
        self.held.clear()
        self.decided.clear()
        self.held_bytes = 0

    def explain(self, span: Record, trace: list[Record]) -> str:
        """What this trace (the records given) would be decided, and why."""
        held = _Held(0.0, self.no_rule)
        for other in trace:
            self._add(held, other)
        self.held_bytes -= held.size - TRACE_OVERHEAD
        reason = self.reason(span["trace_id"], held)
        if reason in (None, "rate"):
            return f"tail: no keep condition holds; head decides: {self.head.describe(span, held.rule)}"
        what = {"error": "a span failed", "slow": f"the trace took over {self.tail.slower_than}s",
                "cost": f"it cost over ${self.tail.cost_over}", "tokens": f"it used over {self.tail.tokens_over} "
                "tokens", "rule": "a span matches a tail rule ("
                + "; ".join(describe_match(r) for r in self.tail.rules) + ")"}[reason]
        return f"tail: kept whole because {what} (held until its root ends or {self.wait:g}s pass)"
