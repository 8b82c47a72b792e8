"""Shared and per-exporter processors in the running daemon: archive everything, send a redacted sample."""

from __future__ import annotations

import orjson
from support import wait_for

from shipper.processors.sample import trace_fraction
from shipper.testing import make_span, read_ndjson, send_seqpacket

KEY = "sk-proj-" + "Q" * 40


def test_one_exporter_archives_everything_another_gets_a_redacted_sample(daemon_factory) -> None:
    """Own processors apply to their exporter only: the archive keeps every span as sent, `hosted` gets
    the sampled traces whole and redacted, and the sampled-out spans are counted under its processor."""
    daemon = daemon_factory()
    hosted_path = daemon.root / "hosted.ndjson"
    daemon.set_config(processors=[{"type": "filter", "drop": [{"name": "GET /health"}]}], exporters={
        "archive": {"type": "file"},
        "hosted": {"type": "file", "path": str(hosted_path),
                   "processors": [{"type": "sample", "rate": 0.5, "seed": 3}, {"type": "redact"}]},
    })
    daemon.start()
    messages = []
    for trace in range(1, 201):
        spans = [make_span(trace, 2, 1, kind="llm", input=f"key {KEY}"), make_span(trace, 1, name="chat")]
        messages.append(b"\n".join(map(orjson.dumps, spans)))
    messages.append(orjson.dumps(make_span(999, 1, name="GET /health")))
    send_seqpacket(daemon.socket, messages)
    wait_for(lambda: daemon.status()["pipeline"].get("received") == 401, message="every span received")
    status = daemon.status()
    assert daemon.stop() == 0

    archive = daemon.records()
    assert len(archive) == 400 and all(r["input"] == f"key {KEY}" for r in archive if "input" in r)
    hosted = read_ndjson(hosted_path)
    expected = {f"{t:032x}" for t in range(1, 201) if trace_fraction(f"{t:032x}", 3) < 0.5}
    assert {r["trace_id"] for r in hosted} == expected and len(hosted) == 2 * len(expected)
    assert {r["input"] for r in hosted if "input" in r} == {"key [REDACTED:openai_key]"}
    processors = status["processors"]
    assert processors["shared[0].filter"]["dropped"] == {"filtered": 1}
    assert processors["hosted[0].sample"]["dropped"] == {"sampled": 400 - len(hosted)}
