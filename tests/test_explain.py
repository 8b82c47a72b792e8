"""`shipper check -c FILE --explain RECORD`: which rule of each processor applies, and what happens."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import yaml
from support import EXAMPLES

from shipper.config import parse_config
from shipper.explain import explain
from shipper.testing import make_span

OPENAI = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


def _config(processors: list, exporters: dict | None = None):
    raw = {"receivers": {"s": {"type": "unix_socket", "path": "/tmp/shipper-explain.sock"}},
           "processors": processors, "exporters": exporters or {"file": {"type": "file"}}}
    return parse_config(yaml.safe_dump(raw), "explain.yaml")


def _explain(config, records: list[dict], tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "records.ndjson"
    path.write_bytes(b"\n".join(map(orjson.dumps, records)))
    out = io.StringIO()
    return explain(config, str(path), out), out.getvalue()


def test_the_command_names_redacted_fields_and_where_the_record_goes(tmp_path: Path) -> None:
    """The CLI prints each processor's verdict, the redacted fields with their mask, and the exporters."""
    config = tmp_path / "shipper.yaml"
    config.write_text(yaml.safe_dump({
        "receivers": {"s": {"type": "unix_socket", "path": "/tmp/shipper-explain.sock"}},
        "processors": [{"type": "redact", "keys": ["ssn"]}, {"type": "sample", "rate": 1.0}],
        "exporters": {"archive": {"type": "file"}},
    }))
    record = tmp_path / "record.json"
    record.write_bytes(orjson.dumps(make_span(name="chat", input=f"key {OPENAI}", metadata={"ssn": "1"})))
    done = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(config), "--explain", str(record)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1. redact: kept, redacted: input (openai_key); metadata.ssn (key)" in done.stdout
    assert "2. sample: no rule matched, the default rate applies: rate 1" in done.stdout
    assert "=> exported to: archive" in done.stdout


def test_a_dropped_record_names_the_rule_and_the_counted_reason(tmp_path: Path) -> None:
    """A filter drop rule is named, the reason is `filtered`, and no exporter gets the record."""
    config = _config([{"type": "filter", "drop": [{"name": "GET /health*"}]}, {"type": "redact"}])
    code, text = _explain(config, [make_span(name="GET /healthz")], tmp_path)
    assert code == 0
    assert "1. filter: drop rule 1 (name='GET /health*') matches: dropped (filtered)" in text
    assert "=> dropped by processors[0] filter: no exporter gets it" in text
    assert "redact" not in text


def test_sampling_rule_and_hash_are_shown(tmp_path: Path) -> None:
    """The sample line says which rule applies, its rate, the trace's hash and the decision."""
    config = _config([{"type": "sample", "rate": 0.0, "rules": [{"kind": "llm", "rate": 1.0}]}])
    code, text = _explain(config, [make_span(kind="llm")], tmp_path)
    assert "rule 1 (kind='llm') applies: rate 1; trace hash" in text and ": kept" in text
    code, text = _explain(config, [make_span(kind="tool")], tmp_path)
    assert "no rule matched, the default rate applies: rate 0" in text and "dropped (sampled)" in text


def test_an_exporter_s_own_processors_are_explained_separately(tmp_path: Path) -> None:
    """A record archived to a file but filtered out for another exporter says so for each."""
    config = _config([], {"archive": {"type": "file"},
                          "hosted": {"type": "file", "path": str(tmp_path / "h.ndjson"),
                                     "processors": [{"type": "filter", "ai_only": True, "keep_roots": False}]}})
    code, text = _explain(config, [make_span(1, 2, 1, name="SELECT users")], tmp_path)
    assert code == 0
    assert "exporter archive (file): no processors of its own" in text
    assert "1. filter: dropped (filtered): no keep rule matches and it is not LLM-like" in text
    assert "=> exported to: archive; dropped for: hosted (by exporters.hosted.processors[0] filter)" in text


def test_tail_sampling_is_explained_over_the_whole_trace(tmp_path: Path) -> None:
    """Given a whole trace (NDJSON), tail sampling keeps every span because one failed."""
    config = _config([{"type": "sample", "rate": 0.0, "tail": {}}])
    records = [orjson.loads(line) for line in (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()]
    code, text = _explain(config, records, tmp_path)
    assert code == 0
    assert text.count("tail: kept whole because a span failed") == len(records)
    assert text.count("=> exported to: file") == len(records)


def test_truncated_fields_are_named(tmp_path: Path) -> None:
    """A value over the cap is reported as truncated, by its path."""
    config = _config([{"type": "truncate", "max_value_bytes": 64}])
    code, text = _explain(config, [make_span(output={"text": "x" * 500})], tmp_path)
    assert "1. truncate: kept, truncated: output.text" in text


def test_a_malformed_record_exits_1_with_its_reason(tmp_path: Path) -> None:
    """A record the daemon would reject is reported with its reason, and the exit code is 1."""
    config = _config([{"type": "redact"}])
    code, text = _explain(config, [{"trace_id": "xyz", "span_id": "1" * 16, "name": "n"}], tmp_path)
    assert code == 1
    assert "record 1: malformed (bad_trace_id" in text


def test_an_unreadable_record_file_exits_1(tmp_path: Path, capsys) -> None:
    """A missing file is an error that names the file."""
    assert explain(_config([]), str(tmp_path / "missing.json")) == 1
    assert "cannot read the record file" in capsys.readouterr().err
