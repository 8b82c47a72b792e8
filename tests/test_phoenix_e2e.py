"""End to end against a real Arize Phoenix server: the example trace arrives with parents, kinds, model, tokens."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from support import EXAMPLES

from shipper.component import Context
from shipper.exporters.phoenix import Config, PhoenixExporter
from shipper.stats import Counters
from shipper.testing import wait_until

pytestmark = [
    pytest.mark.phoenix,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("phoenix") is None, reason="arize-phoenix is not installed"),
]

TRACE = [orjson.loads(line) for line in (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines() if line]
STARTUP_TIMEOUT = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody is listening on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def phoenix_url() -> Iterator[str]:
    """`phoenix serve` on free HTTP and gRPC ports, its state in a temp dir; yields its base URL."""
    workdir = Path(tempfile.mkdtemp(prefix="shipper-phoenix-", dir="/tmp"))
    port, grpc_port = free_port(), free_port()
    while grpc_port == port:
        grpc_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update(PHOENIX_WORKING_DIR=str(workdir), PHOENIX_TELEMETRY_ENABLED="false", PHOENIX_HOST="127.0.0.1",
               PHOENIX_PORT=str(port), PHOENIX_GRPC_PORT=str(grpc_port))
    log = (workdir / "phoenix.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "phoenix.server.main", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"phoenix serve exited with {proc.returncode}: "
                               f"{(workdir / 'phoenix.log').read_text(errors='replace')[-2000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=STARTUP_TIMEOUT, interval=0.25, what="phoenix serve answering /healthz")
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_example_trace_arrives_in_phoenix(phoenix_url: str):
    """The phoenix exporter's spans land in project `hinbox` with parents, kinds, model, tokens and status."""
    exporter = PhoenixExporter(Config(endpoint=phoenix_url, project="default"),
                               Context(name="phoenix", state_dir=Path("/tmp"), counters=Counters()))
    await exporter.open()
    try:
        await exporter.export(TRACE)
    finally:
        await exporter.aclose()

    def arrived() -> list[dict] | None:  # Phoenix stores asynchronously: poll until all five are there
        response = httpx.get(f"{phoenix_url}/v1/projects/hinbox/spans", params={"limit": 100}, timeout=5)
        if response.status_code != 200:
            return None
        spans = response.json()["data"]
        return spans if len(spans) >= len(TRACE) else None

    spans = {s["context"]["span_id"]: s for s in wait_until(arrived, timeout=60, interval=0.25,
                                                            what="the example trace in Phoenix")}
    assert set(spans) == {r["span_id"] for r in TRACE}
    for rec in TRACE:
        span = spans[rec["span_id"]]
        assert span["context"]["trace_id"] == rec["trace_id"]
        assert span["parent_id"] == rec["parent_id"]
        assert span["name"] == rec["name"]
    assert {sid: s["span_kind"] for sid, s in spans.items()} == {
        TRACE[0]["span_id"]: "LLM", TRACE[1]["span_id"]: "LLM", TRACE[2]["span_id"]: "TOOL",
        TRACE[3]["span_id"]: "AGENT", TRACE[4]["span_id"]: "CHAIN"}
    llm = spans[TRACE[0]["span_id"]]["attributes"]
    assert llm["llm.model_name"] == "openrouter/google/gemma-3n-e4b-it:free"
    assert (llm["llm.token_count.prompt"], llm["llm.token_count.completion"], llm["llm.token_count.total"]) == (
        18, 2, 20)
    assert llm["llm.input_messages.0.message.content"] == TRACE[0]["llm"]["input_messages"][0]["content"]
    assert llm["session.id"] == "session-42" and llm["user.id"] == "user-123"
    assert spans[TRACE[1]["span_id"]]["attributes"]["llm.cost.total"] == pytest.approx(3.9e-06)
    agent = spans[TRACE[3]["span_id"]]
    assert agent["status_code"] == "ERROR"
    assert agent["status_message"] == "RateLimitError: 429 Too Many Requests"
    # Nothing went to the configured default project: the span's own project won.
    default = httpx.get(f"{phoenix_url}/v1/projects/default/spans", timeout=5)
    assert default.status_code == 404 or default.json()["data"] == []


async def test_litellm_trace_fields_in_phoenix(phoenix_url: str):
    """A litellm trace read back from Phoenix: Input and Output, models, tool name and description, user."""
    from litellm_trace import END_USER, QUESTION, TOOL_DESCRIPTION, TOOL_INPUT, make_trace

    from shipper.client.ids import new_span_id

    trace = make_trace(project="litellm-mapping")
    # The same call without input / output: Phoenix's Input and Output then come from the messages.
    bare = {k: v for k, v in trace.paid.items() if k not in ("input", "output")}
    bare.update(span_id=new_span_id(), name="capital-bare")
    batch = [*trace.records, bare]
    exporter = PhoenixExporter(Config(endpoint=phoenix_url, project="default"),
                               Context(name="phoenix", state_dir=Path("/tmp"), counters=Counters()))
    await exporter.open()
    try:
        await exporter.export(batch)
    finally:
        await exporter.aclose()

    def arrived() -> list[dict] | None:
        response = httpx.get(f"{phoenix_url}/v1/projects/litellm-mapping/spans", timeout=5,
                             params={"limit": 100, "trace_id": trace.root["trace_id"]})
        if response.status_code != 200:
            return None
        spans = response.json()["data"]
        return spans if len(spans) >= len(batch) else None

    spans = {s["name"]: s for s in wait_until(arrived, timeout=60, interval=0.25, what="the litellm trace in Phoenix")}
    assert {name: s["span_kind"] for name, s in spans.items()} == {
        "answer": "CHAIN", "capital": "LLM", "gazetteer": "TOOL", "free-answer": "LLM", "capital-bare": "LLM"}
    for name in ("capital", "capital-bare"):
        llm = spans[name]["attributes"]
        assert orjson.loads(llm["input.value"]) == QUESTION and llm["input.mime_type"] == "application/json"
        assert llm["llm.model_name"] == trace.paid["llm"]["model"]
        assert llm["llm.response.model_name"] == trace.paid["llm"]["response_model"]
        assert llm["user.id"] == END_USER
        assert llm["llm.cost.total"] == pytest.approx(trace.paid["llm"]["cost_usd"])
    assert spans["capital"]["attributes"]["output.value"] == "Paris"
    assert orjson.loads(spans["capital-bare"]["attributes"]["output.value"]) == trace.paid["llm"]["output_messages"]
    assert spans["free-answer"]["attributes"]["llm.cost.total"] == 0.0
    tool = spans["gazetteer"]["attributes"]
    assert (tool["tool.name"], tool["tool.description"]) == ("gazetteer", TOOL_DESCRIPTION)
    assert orjson.loads(tool["input.value"]) == TOOL_INPUT
    assert spans["answer"]["attributes"]["input.value"] == "Tell me about Paris"
