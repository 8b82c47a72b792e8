"""Each script under examples/ runs against the daemon on its embedded default and makes the trace it describes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import Daemon, wait_records

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def embedded():
    """`shipper run` with no -c (the embedded default), its paths given by SHIPPER_* variables."""
    daemon = Daemon("embedded").start()
    yield daemon
    daemon.cleanup()


def _run(daemon, script: str, count: int) -> dict[str, dict[str, Any]]:
    """Run an example with the daemon's SHIPPER_* variables; return its trace's records by span name."""
    env = {**daemon.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run([sys.executable, str(EXAMPLES / script)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    trace_id = out.stdout.strip().splitlines()[-1].removeprefix("trace_id=")
    records = wait_records(daemon, count, trace_id=trace_id)
    assert len(records) == count, [r["name"] for r in records]
    return {r["name"]: r for r in records}


def _parent(records: dict[str, dict[str, Any]], name: str) -> str | None:
    parent_id = records[name].get("parent_id")
    return next((n for n, r in records.items() if r["span_id"] == parent_id), parent_id)


def test_every_example_is_tested_and_documented() -> None:
    """Each script in examples/ has a test here and a line in examples/README.md."""
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    source = Path(__file__).read_text()
    readme = (EXAMPLES / "README.md").read_text()
    assert scripts and all(f'"{s}"' in source and f"`{s}`" in readme for s in scripts)


def test_two_llm_calls(embedded) -> None:
    """Two llm spans under one chain, the trace-wide fields on every span."""
    records = _run(embedded, "two_llm_calls.py", 4)
    assert _parent(records, "draft") == _parent(records, "polish") == "answer"
    assert _parent(records, "answer") == "request"
    assert records["draft"]["kind"] == "llm" and records["draft"]["llm"]["usage"]["total_tokens"] > 0
    assert {r["session_id"] for r in records.values()} == {"example-session"}


def test_kinds(embedded) -> None:
    """Chain, agent, retriever, llm and tool spans, nested as the code calls them."""
    records = _run(embedded, "kinds.py", 6)
    assert {n: r["kind"] for n, r in records.items()} == {
        "kinds-example": "chain", "pipeline": "chain", "agent": "agent", "retrieve": "retriever",
        "decide": "llm", "calculator": "tool"}
    assert _parent(records, "calculator") == _parent(records, "retrieve") == "agent"
    assert records["calculator"]["output"] == 5


def test_async_and_threads(embedded) -> None:
    """Spans from asyncio tasks and from pool threads nest under the span that started the work."""
    env_records = _run(embedded, "async_and_threads.py", 9)
    assert _parent(env_records, "fan_out") == _parent(env_records, "thread_pool") == "async-and-threads"
    records = wait_records(embedded, 9, trace_id=env_records["fan_out"]["trace_id"])
    by_id = {r["span_id"]: r["name"] for r in records}
    parents = sorted(by_id.get(r.get("parent_id"), "-") for r in records if r["name"] in ("fetch", "crunch"))
    assert parents == ["fan_out"] * 3 + ["thread_pool"] * 3


def test_otel_app(embedded) -> None:
    """The OpenTelemetry/OpenInference app's chain span and the instrumentor's llm span, one trace."""
    records = _run(embedded, "otel_app.py", 2)
    llm, chain = records["completion"], records["handle_question"]
    assert _parent(records, "completion") == "handle_question"
    assert chain["kind"] == "chain" and chain["input"] == "say hello" and chain["output"] == "hello from a mock"
    assert llm["kind"] == "llm" and llm["llm"]["model"] == "gpt-4o-mini" and llm["session_id"] == "otel-session"
    assert llm["service"] == "otel-example"


def test_litellm_callback(embedded) -> None:
    """Four litellm calls (plain, streamed, failed, async), each an llm span under its traced function."""
    records = _run(embedded, "litellm_callback.py", 7)
    assert {n for n, r in records.items() if r["kind"] == "llm"} == {
        "first-answer", "streamed-answer", "rate-limited", "async-answer"}
    assert _parent(records, "first-answer") == _parent(records, "rate-limited") == "ask_twice"
    assert _parent(records, "async-answer") == "ask_async"
    assert records["rate-limited"]["status"] == "error"
    assert "time_to_first_token_ns" in records["streamed-answer"]["llm"]
    assert records["first-answer"]["session_id"] == "litellm-session"


def test_two_processes(embedded) -> None:
    """The child process's span is in the parent's trace, under the parent's span, with its session."""
    records = _run(embedded, "two_processes.py", 2)
    assert _parent(records, "child-work") == "parent-work"
    assert records["child-work"]["session_id"] == "two-process-session"
    assert records["child-work"]["resource"]["process.pid"] != records["parent-work"]["resource"]["process.pid"]
