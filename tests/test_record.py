"""Record v1 validation against the example records (tests/examples/) and the schema shipped in the package."""

from __future__ import annotations

import jsonschema
import orjson
from support import EXAMPLES

from shipper.record import decode_payload
from shipper.schema import record_schema


def test_schema_ships_in_the_package_and_is_a_valid_schema() -> None:
    """The record v1 schema is read from the installed package, not from a path outside the repository."""
    schema = record_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == "shipper span record, version 1"
    assert set(schema["required"]) == {"trace_id", "span_id", "name", "start_ns", "end_ns"}


def test_example_trace_is_valid_against_the_schema() -> None:
    """Each line of the valid example trace passes the schema, as the daemon's own check passes it."""
    validator = jsonschema.Draft202012Validator(record_schema())
    lines = (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()
    assert len(lines) == 5
    for line in lines:
        validator.validate(orjson.loads(line))


def test_schema_refuses_what_the_daemon_refuses() -> None:
    """Each invalid example fails the schema too, but for `end_before_start`, a rule across two fields
    that JSON Schema cannot state (docs/record.md says so); text that is not JSON is not checked."""
    validator = jsonschema.Draft202012Validator(record_schema())
    lines = (EXAMPLES / "invalid-records.ndjson").read_bytes().splitlines()
    reasons = (EXAMPLES / "invalid-records.reasons").read_text().split()
    checked = []
    for line, reason in zip(lines, reasons):
        if reason in ("not_json", "end_before_start"):
            continue
        assert not validator.is_valid(orjson.loads(line)), (reason, line)
        checked.append(reason)
    assert len(checked) == len(lines) - 2


def test_valid_trace_decodes_whole() -> None:
    """Every span of the example trace is valid, ids and parents as written."""
    records, rejects = decode_payload((EXAMPLES / "valid-trace.ndjson").read_bytes(), 1 << 24)
    assert rejects == []
    assert [r["span_id"] for r in records] == [
        "1a2b3c4d5e6f7081", "2b3c4d5e6f708192", "3c4d5e6f708192a3", "4d5e6f708192a3b4", "00f067aa0ba902b7"]
    assert {r["parent_id"] for r in records[:4]} == {"00f067aa0ba902b7"}


def test_each_invalid_record_gets_its_reason() -> None:
    """Each bad line is rejected with the reason the examples name, line by line."""
    lines = (EXAMPLES / "invalid-records.ndjson").read_bytes().splitlines()
    reasons = (EXAMPLES / "invalid-records.reasons").read_text().split()
    assert len(lines) == len(reasons)
    for line, reason in zip(lines, reasons):
        records, rejects = decode_payload(line, 1 << 24)
        assert records == []
        assert [r.reason for r in rejects] == [reason], line


def test_bad_lines_do_not_take_neighbours_down() -> None:
    """Valid records mixed with invalid ones in one payload are all kept."""
    valid = (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()
    invalid = (EXAMPLES / "invalid-records.ndjson").read_bytes().splitlines()
    mixed = b"\n".join(x for pair in zip(valid * 2, invalid) for x in pair)
    records, rejects = decode_payload(mixed, 1 << 24)
    assert len(records) == len(invalid)
    assert len(rejects) == len(invalid)


def test_oversized_record_is_rejected_as_too_large() -> None:
    """A line above the record cap is rejected without being parsed."""
    line = (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()[0]
    records, rejects = decode_payload(line, 100)
    assert records == [] and rejects[0].reason == "too_large"
