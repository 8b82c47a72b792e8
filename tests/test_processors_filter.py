"""Processor `filter`: drop rules, keep-only rules, `ai_only` that keeps roots, counted `filtered`."""

from __future__ import annotations

import pytest

from shipper.errors import ConfigError
from shipper.testing import build_processor, make_span


def _ids(spans: list[dict]) -> list[int]:
    return [int(s["span_id"], 16) for s in spans]


def test_drop_rules_drop_matching_spans_and_count_them() -> None:
    """Spans matching any drop rule are dropped as `filtered`; the others pass untouched."""
    flt, counters = build_processor("filter", {"drop": [{"name": "GET /health*"}, {"service": "cron", "kind": "task"}]})
    spans = [make_span(1, 1, name="GET /healthz"), make_span(1, 2, service="cron", kind="task"),
             make_span(1, 3, service="cron", kind="llm"), make_span(1, 4, name="GET /users")]
    assert _ids(flt(spans)) == [3, 4]
    assert counters.dropped["filtered"] == 2


def test_keep_rules_keep_only_matching_spans_and_the_root() -> None:
    """With `keep` rules only matching spans pass, plus each trace's root."""
    flt, counters = build_processor("filter", {"keep": [{"project": "billing"}]})
    spans = [make_span(1, 1, 9, project="billing"), make_span(1, 2, 9, project="search"), make_span(1, 9)]
    assert _ids(flt(spans)) == [1, 9]
    assert counters.dropped["filtered"] == 1


def test_ai_only_keeps_llm_like_spans_and_the_root() -> None:
    """`ai_only` keeps LLM kinds, spans with an `llm` object or gen_ai.*/llm.* attributes, and the root."""
    flt, counters = build_processor("filter", {"ai_only": True})
    spans = [
        make_span(1, 1, 9, kind="llm"),
        make_span(1, 2, 9, kind="retriever"),
        make_span(1, 3, 9, attributes={"gen_ai.request.model": "gpt-4o"}),
        make_span(1, 4, 9, attributes={"llm.model_name": "claude"}),
        make_span(1, 5, 9, llm={"model": "x"}),
        make_span(1, 6, 9, attributes={"http.method": "GET"}),
        make_span(1, 7, 9, kind="task"),
        make_span(1, 9, name="GET /chat"),
    ]
    assert _ids(flt(spans)) == [1, 2, 3, 4, 5, 9]
    assert counters.dropped["filtered"] == 2


def test_ai_only_without_keep_roots_drops_plain_roots() -> None:
    """`keep_roots: false` lets ai_only drop a root that is not LLM-like."""
    flt, _ = build_processor("filter", {"ai_only": True, "keep_roots": False})
    assert _ids(flt([make_span(1, 9), make_span(1, 1, 9, kind="llm")])) == [1]


def test_drop_rules_win_over_keep_and_apply_to_roots() -> None:
    """A span matching a drop rule goes even if it is LLM-like or a root."""
    flt, _ = build_processor("filter", {"ai_only": True, "drop": [{"attributes": {"internal": True}}]})
    spans = [make_span(1, 1, 9, kind="llm", attributes={"internal": True}), make_span(1, 9, attributes={"internal": True})]
    assert flt(spans) == []


def test_custom_ai_kinds() -> None:
    """`ai_kinds` narrows which kinds count as LLM-like."""
    flt, _ = build_processor("filter", {"ai_only": True, "ai_kinds": ["llm"], "keep_roots": False})
    assert _ids(flt([make_span(1, 1, 9, kind="llm"), make_span(1, 2, 9, kind="tool")])) == [1]


CONFIG_ERRORS = [
    ({}, "drop: the filter does nothing; give `drop` rules, `keep` rules or `ai_only: true`"),
    ({"ai_only": True, "ai_kinds": ["llm", "model"]}, "ai_kinds: 'model' is not a kind; expected some of"),
    ({"drop": [{"nme": "x"}]}, "drop[0].nme: unknown key; did you mean 'name'?"),
    ({"keep": [{"kind": "LLM"}]}, "keep[0].kind: 'LLM' is not a kind; expected one of"),
    ({"drop": {"name": "x"}}, "drop: expected a list, got {'name': 'x'}"),
    ({"ai_only": "yes"}, "ai_only: expected true or false, got 'yes'"),
]


@pytest.mark.parametrize(("settings", "message"), CONFIG_ERRORS, ids=[m.split(":")[0] for _, m in CONFIG_ERRORS])
def test_config_errors(settings, message) -> None:
    """Each invalid filter setting is refused with its key path and what was expected."""
    with pytest.raises(ConfigError) as caught:
        build_processor("filter", settings)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
