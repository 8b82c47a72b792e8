"""Processor `sample`, head mode: whole traces, deterministic per seed, rules in order, the kept share."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.errors import ConfigError
from shipper.processors.sample import trace_fraction
from shipper.testing import build_processor, make_span


def _traces(n: int, spans: int = 3, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        trace = rng.getrandbits(128) | 1
        out.extend(make_span(trace, s + 1, None if s == spans - 1 else spans, kind="llm" if s == 0 else "chain")
                   for s in range(spans))
    return out


@settings(max_examples=60, deadline=None)
@given(
    traces=st.lists(st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 6),
                              st.sampled_from(["llm", "tool", "chain", "span"]),
                              st.sampled_from(["api", "worker", ""])), min_size=1, max_size=40, unique_by=lambda t: t[0]),
    rate=st.floats(0, 1),
    with_rules=st.booleans(),
    cut=st.integers(1, 50),
    shuffle_seed=st.integers(0, 1000),
)
def test_keeps_or_drops_whole_traces(traces, rate, with_rules, cut, shuffle_seed) -> None:
    """For any set of traces, however interleaved and batched, each trace is kept entirely or dropped entirely."""
    rules = [{"kind": "llm", "rate": 1.0}, {"service": "work*", "rate": 0.3}] if with_rules else []
    sampler, counters = build_processor("sample", {"rate": rate, "rules": rules})
    spans = []
    for trace_id, n, kind, service in traces:
        spans.extend(make_span(trace_id, s + 1, kind=kind if s % 2 else "span", service=service) for s in range(n))
    random.Random(shuffle_seed).shuffle(spans)
    kept = []
    for start in range(0, len(spans), cut):
        kept.extend(sampler(spans[start:start + cut]))
    by_trace: dict[str, int] = {}
    for span in kept:
        by_trace[span["trace_id"]] = by_trace.get(span["trace_id"], 0) + 1
    sizes = {f"{t:032x}": n for t, n, _, _ in traces}
    assert all(by_trace[t] == sizes[t] for t in by_trace)
    assert counters.dropped.get("sampled", 0) == len(spans) - len(kept)


@settings(max_examples=15, deadline=None)
@given(rate=st.floats(0.05, 0.95), seed=st.integers(0, 2**32))
def test_kept_share_converges_to_the_rate(rate, seed) -> None:
    """Over 20,000 random trace ids the kept share is within 2% of the rate."""
    sampler, _ = build_processor("sample", {"rate": rate, "seed": seed})
    rng = random.Random(seed)
    spans = [make_span(rng.getrandbits(128) | 1) for _ in range(20_000)]
    share = len(sampler(spans)) / len(spans)
    assert abs(share - rate) < 0.02


def test_same_seed_same_decision_on_every_daemon() -> None:
    """Two samplers sharing a seed decide every trace alike; another seed decides differently."""
    spans = _traces(2000, spans=1)
    first, _ = build_processor("sample", {"rate": 0.5, "seed": 42})
    second, _ = build_processor("sample", {"rate": 0.5, "seed": 42})
    other, _ = build_processor("sample", {"rate": 0.5, "seed": 43})
    ids = [s["trace_id"] for s in first(spans)]
    assert ids == [s["trace_id"] for s in second(spans)]
    assert ids != [s["trace_id"] for s in other(spans)]


def test_lower_rate_keeps_a_subset_of_a_higher_rate() -> None:
    """A trace kept at 10% is also kept at 50%, so raising a rate never loses traces already kept."""
    spans = _traces(3000, spans=1)
    low, _ = build_processor("sample", {"rate": 0.1})
    high, _ = build_processor("sample", {"rate": 0.5})
    assert {s["trace_id"] for s in low(spans)} <= {s["trace_id"] for s in high(spans)}


def test_decision_is_the_published_hash() -> None:
    """A trace is kept exactly when trace_fraction(trace_id, seed) is below the rate."""
    spans = _traces(500, spans=1)
    sampler, _ = build_processor("sample", {"rate": 0.3, "seed": 5})
    kept = {s["trace_id"] for s in sampler(spans)}
    assert kept == {s["trace_id"] for s in spans if trace_fraction(s["trace_id"], 5) < 0.3}


def test_rules_match_in_order_and_rate_covers_the_rest() -> None:
    """The first matching rule sets the rate: llm traces all kept, `noisy` services none, others at `rate`."""
    sampler, counters = build_processor("sample", {
        "rate": 0.0,
        "rules": [{"kind": "llm", "rate": 1.0}, {"service": "noisy-*", "rate": 0.0},
                  {"name": "chat.*", "project": ["a", "b"], "rate": 1.0}],
    })
    spans = [
        make_span(1, kind="llm", service="noisy-cron"),
        make_span(2, service="noisy-cron", name="chat.x", project="a"),
        make_span(3, name="chat.reply", project="b"),
        make_span(4, name="chat.reply", project="c"),
        make_span(5, attributes={"x": 1}),
    ]
    assert [s["trace_id"][-1] for s in sampler(spans)] == ["1", "3"]
    assert counters.dropped["sampled"] == 3


def test_rules_on_status_and_attributes() -> None:
    """Rules match status and attribute values (glob for strings, equality otherwise, `*` for presence)."""
    sampler, _ = build_processor("sample", {"rate": 0.0, "rules": [
        {"status": "error", "rate": 1.0},
        {"attributes": {"tenant": "gold-*"}, "rate": 1.0},
        {"attributes": {"retry": 3}, "rate": 1.0},
        {"metadata": {"debug": "*"}, "rate": 1.0},
    ]})
    spans = [make_span(1, status="error"), make_span(2, attributes={"tenant": "gold-eu"}),
             make_span(3, attributes={"tenant": "silver"}), make_span(4, attributes={"retry": 3}),
             make_span(5, attributes={"retry": "3"}), make_span(6, metadata={"debug": False}), make_span(7)]
    assert [int(s["trace_id"], 16) for s in sampler(spans)] == [1, 2, 4, 6]


def test_the_first_span_seen_decides_for_the_trace_with_rules() -> None:
    """With rules, later spans of a trace follow the decision of its first span, even if another rule matches them."""
    sampler, _ = build_processor("sample", {"rate": 0.0, "rules": [{"kind": "llm", "rate": 1.0}]})
    assert len(sampler([make_span(9, 1, 3, kind="llm")])) == 1
    assert len(sampler([make_span(9, 2, 3, kind="tool"), make_span(9, 3)])) == 2
    assert sampler([make_span(8, 1, 3, kind="tool")]) == []
    assert sampler([make_span(8, 2, 3, kind="llm")]) == []


CONFIG_ERRORS = [
    ({"rate": 1.5}, "rate: expected at most 1.0, got 1.5"),
    ({"rate": -0.1}, "rate: expected at least 0.0, got -0.1"),
    ({"seed": -1}, "seed: expected at least 0, got -1"),
    ({"rules": [{"kind": "model", "rate": 1}]}, "rules[0].kind: 'model' is not a kind; expected one of"),
    ({"rules": [{"status": "failed", "rate": 1}]}, "rules[0].status: 'failed' is not a status; expected one of"),
    ({"rules": [{"name": "x"}]}, "rules[0].rate: required key is missing"),
    ({"rules": [{"nmae": "x", "rate": 1}]}, "rules[0].nmae: unknown key; did you mean 'name'?"),
    ({"rules": [{"attributes": {"a": {"b": 1}}, "rate": 1}]},
     "rules[0].attributes.a: expected a string (glob), number or true/false to compare with, got dict"),
    ({"rules": [{"rate": 2}]}, "rules[0].rate: expected at most 1.0, got 2"),
    ({"decision_cache": -5}, "decision_cache: expected at least 0, got -5"),
]


@pytest.mark.parametrize(("settings", "message"), CONFIG_ERRORS, ids=[m.split(":")[0] for _, m in CONFIG_ERRORS])
def test_config_errors(settings, message) -> None:
    """Each invalid setting is refused with its key path and what was expected."""
    with pytest.raises(ConfigError) as caught:
        build_processor("sample", settings)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
