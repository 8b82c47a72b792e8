"""Processor `truncate`: string values and whole records capped in bytes, with a marker, copy on write."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.errors import ConfigError
from shipper.processors.truncate import cut
from shipper.record import validate
from shipper.testing import build_processor, make_span


def test_a_long_string_is_cut_with_a_marker_within_the_cap() -> None:
    """A 10,000-byte value capped at 1 KiB keeps its head and says how many bytes went."""
    trunc, counters = build_processor("truncate", {"max_value_bytes": 1024})
    (out,) = trunc([make_span(input="x" * 10_000, output="short")])
    assert len(out["input"].encode()) <= 1024
    kept = out["input"].split("…")[0]
    assert out["input"] == kept + f"…[truncated {10_000 - len(kept)} bytes]"
    assert out["output"] == "short"
    assert counters.counts["truncated_values"] == 1


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=0, max_size=400), limit=st.integers(64, 300))
def test_cut_respects_character_boundaries_and_the_cap(text, limit) -> None:
    """Any text is cut to at most `limit` UTF-8 bytes, at a character boundary, and the count is exact."""
    result = cut(text, limit)
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        assert result is text
        return
    assert len(result.encode("utf-8", "surrogatepass")) <= limit
    head, _, marker = result.rpartition("…[truncated ")
    assert text.startswith(head)
    assert int(marker.split(" ")[0]) == len(data) - len(head.encode("utf-8", "surrogatepass"))


def test_nested_values_are_capped_and_the_original_is_untouched() -> None:
    """Strings deep in messages and metadata are cut in a copy; the shared record stays as it was."""
    trunc, _ = build_processor("truncate", {"max_value_bytes": 100})
    record = make_span(llm={"input_messages": [{"role": "user", "content": "é" * 500}]}, metadata={"k": "v"})
    before = copy.deepcopy(record)
    (out,) = trunc([record])
    assert record == before
    assert out["llm"]["input_messages"][0]["content"].endswith("bytes]")
    assert out["metadata"] is record["metadata"]
    clean = make_span(input="fine")
    assert trunc([clean])[0] is clean


def test_a_record_over_its_cap_is_shrunk_to_fit_and_stays_valid() -> None:
    """Many values under the per-value cap but over the record cap are cut smaller until the record fits."""
    trunc, counters = build_processor("truncate", {"max_value_bytes": "64KiB", "max_record_bytes": "64KiB"})
    record = make_span(input=["y" * 30_000] * 5, output="z" * 60_000, metadata={"a": "b" * 20_000})
    (out,) = trunc([record])
    assert len(orjson.dumps(out)) <= 64 * 1024
    assert validate(out) is out
    assert counters.counts["truncated_records"] == 1


def test_bulk_that_is_not_strings_is_replaced_keeping_each_field_s_type() -> None:
    """A long list of numbers over the record cap is replaced by the marker; the record stays valid."""
    trunc, _ = build_processor("truncate", {"max_record_bytes": "16KiB", "max_value_bytes": "1KiB"})
    record = make_span(output=[0.123456789] * 20_000, metadata={"n": list(range(5000))}, llm={"model": "m"})
    (out,) = trunc([record])
    assert len(orjson.dumps(out)) <= 16 * 1024
    assert out["output"].startswith("…[truncated ")
    validate(out)


def test_structural_fields_are_never_cut() -> None:
    """Ids and the name stay intact even with the smallest caps."""
    trunc, _ = build_processor("truncate", {"max_value_bytes": 64, "max_record_bytes": "16KiB"})
    record = make_span(name="n" * 1000, input="x" * 100)
    (out,) = trunc([record])
    assert out["trace_id"] == record["trace_id"] and out["span_id"] == record["span_id"]
    assert len(out["name"].encode()) <= 64 and out["input"].endswith("bytes]")


CONFIG_ERRORS = [
    ({"max_value_bytes": 10}, "max_value_bytes: expected at least 64, got 10"),
    ({"max_record_bytes": "1KiB"}, "max_record_bytes: expected at least 16384, got 1024"),
    ({"max_value_bytes": "2MiB"}, "max_value_bytes: 2097152 is more than max_record_bytes (1048576)"),
    ({"max_value_bytes": "lots"}, "max_value_bytes: expected a size like 512KiB, 16MiB or a number of bytes"),
    ({"max_bytes": 100}, "max_bytes: unknown key; did you mean"),
]


@pytest.mark.parametrize(("settings", "message"), CONFIG_ERRORS, ids=[m.split(":")[0] for _, m in CONFIG_ERRORS])
def test_config_errors(settings, message) -> None:
    """Each invalid truncate setting is refused with its key path and what was expected."""
    with pytest.raises(ConfigError) as caught:
        build_processor("truncate", settings)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
