"""One real litellm trace through each exporter, decoded from what a real HTTP server received.

The trace (tests/litellm_trace.py) is made by litellm with `mock_response` through ShipperCallback and
the shim's socket; each exporter sends it to a real OTLP/HTTP server that decodes the protobuf, and the
LLM fields are checked as Langfuse, Braintrust and OTel GenAI name them. Phoenix reads the same trace
back for real in tests/test_phoenix_e2e.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from langfuse._client.attributes import LangfuseOtelSpanAttributes as LF
from litellm_trace import END_USER, FOLLOW_UP, QUESTION, TOOL_DESCRIPTION, TOOL_INPUT, TOOL_OUTPUT, make_trace

from shipper import registry
from shipper.component import Context
from shipper.config import build_dataclass
from shipper.stats import Counters
from shipper.testing import OTLPServer


@pytest.fixture(scope="module")
def trace():
    return make_trace()


def send(kind: str, records: list[dict[str, Any]], **settings: Any) -> dict[str, dict[str, Any]]:
    """Export `records` with exporter `kind` to a real OTLP server; the decoded spans by record name."""
    import anyio

    with OTLPServer() as server:
        base = {"langfuse": {"host": server.url, "public_key": "pk-lf-1", "secret_key": "sk-lf-1"},
                "braintrust": {"api_url": server.url, "api_key": "bt-1"},
                "otlp_http": {"endpoint": server.url}}[kind]
        cls = registry.load("exporters", kind)
        problems: list[str] = []
        config = build_dataclass(cls.Config, {**base, **settings}, kind, problems)
        assert not problems
        exporter = cls(config, Context(name=kind, state_dir=Path(tempfile.mkdtemp(dir="/tmp")),
                                       counters=Counters()))

        async def run() -> None:
            await exporter.open()
            try:
                await exporter.export(records)
            finally:
                await exporter.aclose()

        anyio.run(run)
        (request,) = server.requests
        assert request.error == ""
    return {span["name"]: span for span in request.spans}


def test_langfuse_fields(trace):
    """Trace metadata from the root only; usage and cost details in Langfuse's names, a 0.0 cost kept."""
    spans = send("langfuse", trace.records)
    root, paid, tool, free = (spans[n]["attributes"] for n in ("answer", "capital", "gazetteer", "free-answer"))
    trace_keys = {span: sorted(k for k in attrs if k.startswith(f"{LF.TRACE_METADATA}."))
                  for span, attrs in (("root", root), ("paid", paid), ("tool", tool), ("free", free))}
    assert trace_keys == {"root": [f"{LF.TRACE_METADATA}.release"], "paid": [], "tool": [], "free": []}
    assert root[f"{LF.TRACE_METADATA}.release"] == "2026.12"
    # A child's metadata stays on its observation, where two calls' keys do not collide.
    assert paid[f"{LF.OBSERVATION_METADATA}.prompt_version"] == "v3"
    assert free[f"{LF.OBSERVATION_METADATA}.prompt_version"] == "v4"
    assert paid[f"{LF.OBSERVATION_METADATA}.litellm_call_id"] != free[f"{LF.OBSERVATION_METADATA}.litellm_call_id"]

    assert paid[LF.OBSERVATION_TYPE] == free[LF.OBSERVATION_TYPE] == "generation"
    assert tool[LF.OBSERVATION_TYPE] == "tool"
    for attrs in (paid, free):
        assert orjson.loads(attrs[LF.OBSERVATION_USAGE_DETAILS]) == {"input": 10, "output": 20, "total": 30}
    assert orjson.loads(paid[LF.OBSERVATION_COST_DETAILS]) == {"total": pytest.approx(trace.paid["llm"]["cost_usd"])}
    assert trace.free["llm"]["cost_usd"] == 0.0
    assert orjson.loads(free[LF.OBSERVATION_COST_DETAILS]) == {"total": 0.0}  # Langfuse drops gen_ai.usage.cost 0

    assert orjson.loads(paid[LF.OBSERVATION_INPUT]) == QUESTION and orjson.loads(paid[LF.OBSERVATION_OUTPUT]) == "Paris"
    assert orjson.loads(free[LF.OBSERVATION_INPUT]) == FOLLOW_UP
    assert paid[LF.OBSERVATION_MODEL] == "gpt-4o-mini" and free[LF.OBSERVATION_MODEL] == "llama3"
    assert all(attrs["langfuse.user.id"] == END_USER for attrs in (root, paid, tool, free))
    assert all(attrs[LF.TRACE_NAME] == "answer" for attrs in (root, paid, tool, free))


def test_langfuse_usage_details_leave_out_cached_and_reasoning_counts(trace):
    """input / output exclude the cached / reasoning tokens, which get Langfuse's own detail keys."""
    usage = {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150, "cache_read_tokens": 60,
             "reasoning_tokens": 20}
    rec = {**trace.paid, "llm": {**trace.paid["llm"], "usage": usage}}
    attrs = send("langfuse", [rec])["capital"]["attributes"]
    assert orjson.loads(attrs[LF.OBSERVATION_USAGE_DETAILS]) == {
        "input": 40, "input_cached_tokens": 60, "output": 30, "output_reasoning_tokens": 20, "total": 150}


def test_braintrust_fields(trace):
    """Cost reaches Braintrust as metrics.estimated_cost (0.0 included), with tokens and the messages."""
    spans = send("braintrust", trace.records)
    paid, free, tool = (spans[n]["attributes"] for n in ("capital", "free-answer", "gazetteer"))
    metrics = orjson.loads(paid["braintrust.metrics"])
    assert metrics == {"prompt_tokens": 10, "completion_tokens": 20, "tokens": 30,
                       "estimated_cost": pytest.approx(trace.paid["llm"]["cost_usd"])}
    assert orjson.loads(free["braintrust.metrics"])["estimated_cost"] == 0.0
    assert orjson.loads(paid["braintrust.input_json"]) == QUESTION
    assert orjson.loads(paid["braintrust.output_json"]) == "Paris"
    assert orjson.loads(paid["braintrust.span_attributes"]) == {"type": "llm", "name": "capital"}
    metadata = orjson.loads(paid["braintrust.metadata"])
    assert (metadata["model"], metadata["user_id"], metadata["prompt_version"]) == ("gpt-4o-mini", END_USER, "v3")
    assert orjson.loads(tool["braintrust.span_attributes"]) == {"type": "tool", "name": "gazetteer"}
    assert spans["answer"]["attributes"]["braintrust.tags"] == ["mapping"]


def test_genai_fields(trace):
    """OTel GenAI: finish_reason on output messages, no gen_ai.system, CLIENT LLM spans, tool description."""
    spans = send("otlp_http", trace.records, conventions=["genai"])
    paid, tool = spans["capital"], spans["gazetteer"]
    assert orjson.loads(paid["attributes"]["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Paris"}], "finish_reason": "stop"}]
    assert orjson.loads(paid["attributes"]["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": QUESTION[0]["content"]}]}]
    assert paid["attributes"]["gen_ai.provider.name"] == "openai"
    assert not [k for span in spans.values() for k in span["attributes"] if k == "gen_ai.system"]
    assert (paid["kind"], spans["free-answer"]["kind"], tool["kind"], spans["answer"]["kind"]) == (
        "client", "client", "internal", "internal")
    assert tool["attributes"]["gen_ai.tool.name"] == "gazetteer"
    assert tool["attributes"]["gen_ai.tool.description"] == TOOL_DESCRIPTION
    assert "gen_ai.tool.call.arguments" not in tool["attributes"]  # content is opt-in


def test_genai_opt_ins(trace):
    """`conventions: [gen_ai_legacy]` adds gen_ai.system; `tool_content: true` the tool call's arguments and result."""
    spans = send("otlp_http", trace.records, conventions=["gen_ai_legacy"], tool_content=True)
    assert spans["capital"]["attributes"]["gen_ai.system"] == spans["capital"]["attributes"]["gen_ai.provider.name"]
    tool = spans["gazetteer"]["attributes"]
    assert orjson.loads(tool["gen_ai.tool.call.arguments"]) == TOOL_INPUT
    assert orjson.loads(tool["gen_ai.tool.call.result"]) == TOOL_OUTPUT
    assert not [k for span in spans.values() for k in span["attributes"] if k.startswith("openinference.")]


def test_genai_failed_call_and_media_parts(trace):
    """A failed span's messages finish with "error"; images and audio become uri / blob parts."""
    image = {"type": "image_url", "image_url": {"url": "https://example.com/paris.png"}}
    inline = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    llm = {**trace.paid["llm"], "input_messages": [{"role": "user", "content": [
        {"type": "text", "text": "Where is this?"}, image, inline, audio]}],
        "output_messages": [{"role": "assistant", "content": "Par"}]}
    rec = {**trace.paid, "llm": llm, "status": "error", "error": {"type": "Timeout", "message": "cut off"}}
    attrs = send("otlp_http", [rec], conventions=["genai"])["capital"]["attributes"]
    assert orjson.loads(attrs["gen_ai.input.messages"])[0]["parts"] == [
        {"type": "text", "content": "Where is this?"},
        {"type": "uri", "modality": "image", "uri": "https://example.com/paris.png"},
        {"type": "blob", "modality": "image", "content": "iVBORw0KGgo=", "mime_type": "image/png"},
        {"type": "blob", "modality": "audio", "content": "UklGRg==", "mime_type": "audio/wav"}]
    assert orjson.loads(attrs["gen_ai.output.messages"])[0]["finish_reason"] == "error"


def test_the_documented_otlp_http_options_are_a_valid_config():
    """The otlp_http block in docs/mappings.md passes validation and names the documented defaults."""
    import re

    from shipper.config import parse_config

    text = (Path(__file__).resolve().parents[1] / "docs" / "mappings.md").read_text()
    (example,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    config = parse_config("receivers: {s: {type: unix_socket, path: /tmp/x.sock}}\n" + example, "docs/mappings.md")
    (spec,) = config.exporters
    assert spec.type == "otlp_http"
    assert (spec.config.conventions, spec.config.tool_content) == (["genai", "openinference"], False)
