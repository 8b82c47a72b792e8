"""Processor `sample` with `tail`: whole traces held, decided once, kept for errors, time, cost, tokens, rules."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import wait_for

from shipper.errors import ConfigError
from shipper.testing import build_processor, make_span

DROP_ALL = {"rate": 0.0, "tail": {"decision_wait": "1h"}}


def _chain_trace(trace: int, depth: int, **leaf: object) -> list[dict]:
    """A trace root -> ... -> leaf of `depth` spans, leaf first (the order spans end in), `leaf` fields on the leaf."""
    spans = []
    for level in range(depth, 0, -1):
        parent = level - 1 if level > 1 else None
        fields = {"start_ns": 1_000 * (depth - level), "end_ns": 1_000 * (depth - level) + 10}
        fields.update(leaf if level == depth else {})
        spans.append(make_span(trace, level, parent, **fields))
    return spans


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(2, 12), where=st.integers(0, 11), cut=st.integers(1, 5))
def test_an_error_anywhere_keeps_the_whole_trace(depth, where, cut) -> None:
    """An error deep in a trace keeps every span of it, whichever span failed and however it is batched."""
    sampler, counters = build_processor("sample", DROP_ALL)
    spans = _chain_trace(3, depth)
    failed = spans[min(where, depth - 1)]
    failed["status"] = "error"
    failed["error"] = {"type": "ValueError", "message": "boom"}
    kept = []
    for start in range(0, len(spans), cut):
        kept.extend(sampler(spans[start:start + cut]))
    assert sorted(s["span_id"] for s in kept) == sorted(s["span_id"] for s in spans)
    assert counters.counts["kept_error"] == 1
    assert not counters.dropped


def test_a_trace_is_held_until_its_root_ends_then_dropped_whole() -> None:
    """Nothing leaves before the root arrives; without a keep condition the head rate (0) drops it all."""
    sampler, counters = build_processor("sample", DROP_ALL)
    spans = _chain_trace(4, 5)
    assert sampler(spans[:-1]) == []
    assert sampler.statistics()["held_traces"] == 1
    assert sampler(spans[-1:]) == []
    assert counters.dropped["sampled"] == 5
    assert counters.counts["decided_root"] == 1
    assert sampler.statistics() == {"held_traces": 0, "held_bytes": 0}


@pytest.mark.parametrize(("tail", "leaf", "reason"), [
    ({"slower_than": "5ms"}, {"end_ns": 10_000_000}, "slow"),
    ({"cost_over": 0.01}, {"llm": {"cost_usd": 0.02}}, "cost"),
    ({"tokens_over": 100}, {"llm": {"usage": {"input_tokens": 90, "output_tokens": 20}}}, "tokens"),
    ({"rules": [{"attributes": {"user.tier": "gold"}}]}, {"attributes": {"user.tier": "gold"}}, "rule"),
])
def test_keep_conditions(tail, leaf, reason) -> None:
    """A trace over the time, cost or token limit, or matching a tail rule, is kept whole despite rate 0."""
    sampler, counters = build_processor("sample", {"rate": 0.0, "tail": {"decision_wait": "1h", **tail}})
    spans = _chain_trace(5, 3, **leaf)
    assert len(sampler(spans)) == 3
    assert counters.counts[f"kept_{reason}"] == 1
    below, _ = build_processor("sample", {"rate": 0.0, "tail": {"decision_wait": "1h", **tail}})
    assert below(_chain_trace(6, 3)) == []


def test_cost_and_tokens_are_summed_over_the_trace() -> None:
    """Three LLM calls of $0.004 each pass a $0.01 limit together."""
    sampler, _ = build_processor("sample", {"rate": 0.0, "tail": {"cost_over": 0.01, "decision_wait": "1h"}})
    spans = [make_span(7, i, 9, kind="llm", llm={"cost_usd": 0.004}) for i in (1, 2, 3)] + [make_span(7, 9)]
    assert len(sampler(spans)) == 4


def test_errors_are_not_kept_when_keep_errors_is_off() -> None:
    """`keep_errors: false` leaves a failed trace to the head rate."""
    sampler, _ = build_processor("sample", {"rate": 0.0, "tail": {"keep_errors": False, "decision_wait": "1h"}})
    assert sampler(_chain_trace(8, 3, status="error")) == []


def test_head_rules_see_the_whole_trace() -> None:
    """With tail on, a head rule matching any span of the trace (here the root) sets the trace's rate."""
    sampler, _ = build_processor("sample", {"rate": 0.0, "rules": [{"name": "checkout", "rate": 1.0}],
                                            "tail": {"decision_wait": "1h"}})
    spans = _chain_trace(9, 4)
    spans[-1]["name"] = "checkout"
    assert len(sampler(spans)) == 4


def test_decision_wait_decides_traces_whose_root_never_comes() -> None:
    """A trace without its root is decided once `decision_wait` has passed, on the pipeline's idle flush."""
    sampler, counters = build_processor("sample", {"rate": 1.0, "tail": {"decision_wait": "50ms"}})
    assert sampler([make_span(10, 2, 1)]) == []
    released = wait_for(lambda: sampler.flush(False), timeout=5, message="the decision_wait to pass")
    assert [s["span_id"] for s in released] == [f"{2:016x}"]
    assert counters.counts["decided_wait"] == 1


def test_late_spans_follow_the_decision() -> None:
    """A span arriving after its trace was decided is kept or dropped as the trace was."""
    sampler, counters = build_processor("sample", {"rate": 0.0, "tail": {"decision_wait": "1h"}})
    assert len(sampler(_chain_trace(11, 2, status="error"))) == 2
    assert sampler(_chain_trace(12, 2)) == []
    assert len(sampler([make_span(11, 7, 1)])) == 1
    assert sampler([make_span(12, 7, 1)]) == []
    assert counters.counts["late_spans"] == 2


def test_forced_flush_releases_everything_held() -> None:
    """At shutdown or reload (`flush(True)`) every held trace is decided, none is left behind."""
    sampler, counters = build_processor("sample", {"rate": 1.0, "tail": {"decision_wait": "1h"}})
    for trace in range(1, 101):
        sampler([make_span(trace, 2, 1)])
    assert len(sampler.flush(True)) == 100
    assert sampler.statistics()["held_traces"] == 0


def _open_traces(n: int) -> list[dict]:
    llm = {"model": "gpt-4o-mini", "usage": {"total_tokens": 20}, "cost_usd": 1e-5}
    return [make_span(t + 1, 2, 1, kind="llm", service="svc", name="query_llm", llm=llm, input="hello world " * 5)
            for t in range(n)]


def test_memory_bound_holds_with_100k_open_traces() -> None:
    """Past `max_traces`/`max_bytes` the oldest traces are decided early: the bound holds and none is lost."""
    spans = _open_traces(100_000)
    max_bytes = 4 * 1024 * 1024
    sampler, counters = build_processor("sample", {"rate": 0.5, "tail": {
        "decision_wait": "1h", "max_traces": 20_000, "max_bytes": max_bytes}})
    released = 0
    for start in range(0, len(spans), 512):
        released += len(sampler(spans[start:start + 512]))
        assert len(sampler.held) <= 20_000 and sampler.held_bytes <= max_bytes
    held = len(sampler.held)
    released += len(sampler.flush(True))
    assert released + counters.dropped["sampled"] == 100_000
    assert counters.counts["decided_early"] == 100_000 - held
    print(f"\n100k open traces, max_bytes 4 MiB: {held} traces held at the end, "
          f"{counters.counts['decided_early']} decided early, none lost")


def test_100k_open_traces_figure() -> None:
    """Holding 100k open traces of one ~370-byte span costs what `held_bytes` accounts for, or less."""
    spans = _open_traces(100_000)
    sampler, _ = build_processor("sample", {"rate": 0.5, "tail": {
        "decision_wait": "1h", "max_traces": 100_000, "max_bytes": "1GiB"}})
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        for start in range(0, len(spans), 512):
            sampler(spans[start:start + 512])
        elapsed = time.perf_counter() - started
        traced = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(sampler.held) == 100_000
    print(f"\n100k open traces held: traced {traced / 2**20:.1f} MiB ({traced / 100_000:.0f} B/trace), "
          f"accounted held_bytes {sampler.held_bytes / 2**20:.1f} MiB; {elapsed:.2f}s under tracemalloc")
    assert traced <= sampler.held_bytes


CONFIG_ERRORS = [
    ({"tail": {"max_traces": 0}}, "tail.max_traces: expected at least 1, got 0"),
    ({"tail": {"max_bytes": "1KiB"}}, "tail.max_bytes: expected at least 65536, got 1024"),
    ({"tail": {"decision_wait": "soon"}}, "tail.decision_wait: expected a duration like 250ms"),
    ({"tail": {"decision_wait": "-1s"}}, "tail.decision_wait: expected a duration like 250ms"),
    ({"tail": {"slower_than": "fast"}}, "tail.slower_than: expected a duration like 250ms"),
    ({"tail": {"cost_over": -1}}, "tail.cost_over: expected at least 0.0, got -1.0"),
    ({"tail": {"tokens_over": 1.5}}, "tail.tokens_over: expected an integer, got 1.5"),
    ({"tail": {"keep_errors": "yes"}}, "tail.keep_errors: expected true or false, got 'yes'"),
    ({"tail": {"rules": [{"kind": "llms"}]}}, "tail.rules[0].kind: 'llms' is not a kind"),
    ({"tail": {"decision": "1s"}}, "tail.decision: unknown key; did you mean 'decision_wait'?"),
]


@pytest.mark.parametrize(("settings", "message"), CONFIG_ERRORS, ids=[m.split(":")[0] for _, m in CONFIG_ERRORS])
def test_config_errors(settings, message) -> None:
    """Each invalid tail setting is refused with its key path and what was expected."""
    with pytest.raises(ConfigError) as caught:
        build_processor("sample", settings)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
