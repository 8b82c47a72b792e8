"""The example trace through each exporter, asserted attribute by attribute on the decoded protobuf."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import EXAMPLES

from shipper import registry
from shipper.component import Context
from shipper.config import build_dataclass
from shipper.stats import Counters
from shipper.testing import OTLPServer

TRACE = [orjson.loads(line) for line in (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines() if line]
LLM1, LLM2, TOOL, AGENT, ROOT = (r["span_id"] for r in TRACE)
Q1 = "What's the capital of China? Just give me the name."
Q2 = "What's the capital of Japan? Just give me the name."
MODEL1 = "openrouter/google/gemma-3n-e4b-it:free"

# What every exporter shares, per span.
GENAI = {
    LLM1: {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openrouter",
        "gen_ai.request.model": MODEL1, "gen_ai.request.temperature": 0.0,
        "gen_ai.usage.input_tokens": 18, "gen_ai.usage.output_tokens": 2, "gen_ai.usage.total_tokens": 20,
        "gen_ai.input.messages": orjson.dumps([{"role": "user", "parts": [{"type": "text", "content": Q1}]}]).decode(),
        "gen_ai.output.messages": orjson.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "Beijing"}], "finish_reason": "stop"}]).decode(),
        "gen_ai.conversation.id": "session-42",
    },
    LLM2: {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 18, "gen_ai.usage.output_tokens": 2, "gen_ai.usage.total_tokens": 20,
        "gen_ai.conversation.id": "session-42",
    },
    TOOL: {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "query_embedding",
           "gen_ai.tool.description": "Query embedding", "gen_ai.conversation.id": "session-42"},
    AGENT: {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "query_agent",
            "gen_ai.conversation.id": "session-42", "error.type": "RateLimitError"},
    ROOT: {"gen_ai.conversation.id": "session-42"},
}
CONTEXT_OI = {"session.id": "session-42", "user.id": "user-123", "tag.tags": ["capitals"]}
OPENINFERENCE = {
    LLM1: {
        "openinference.span.kind": "LLM",
        "input.value": orjson.dumps([{"role": "user", "content": Q1}]).decode(), "input.mime_type": "application/json",
        "output.value": "Beijing", "output.mime_type": "text/plain",
        "llm.model_name": MODEL1, "llm.provider": "openrouter", "llm.invocation_parameters": '{"temperature":0.0}',
        "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": Q1,
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "Beijing",
        "llm.token_count.prompt": 18, "llm.token_count.completion": 2, "llm.token_count.total": 20,
        "llm.cost.total": 0.0, "metadata": '{"prompt_version":"v3"}', **CONTEXT_OI,
    },
    LLM2: {
        "openinference.span.kind": "LLM",
        "input.value": orjson.dumps([{"role": "user", "content": Q2}]).decode(), "input.mime_type": "application/json",
        "output.value": "Tokyo", "output.mime_type": "text/plain",
        "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
        "llm.token_count.prompt": 18, "llm.token_count.completion": 2, "llm.token_count.total": 20,
        "llm.cost.total": 3.9e-06, **CONTEXT_OI,
    },
    TOOL: {
        "openinference.span.kind": "TOOL", "tool.name": "query_embedding",
        "input.value": "What's the capital of China?", "input.mime_type": "text/plain",
        "output.value": "[0.1,0.2,0.3]", "output.mime_type": "application/json", **CONTEXT_OI,
    },
    AGENT: {"openinference.span.kind": "AGENT", "input.value": "Who are you?", "input.mime_type": "text/plain",
            **CONTEXT_OI},
    ROOT: {"openinference.span.kind": "CHAIN", "output.value": '["Beijing","Tokyo"]',
           "output.mime_type": "application/json", "metadata": '{"user_id":"user-123","org_id":"org-456"}',
           **CONTEXT_OI},
}
CONTEXT_LF = {"langfuse.trace.name": "my_llm_application", "langfuse.session.id": "session-42",
              "langfuse.user.id": "user-123", "langfuse.trace.tags": ["capitals"]}
LANGFUSE = {
    LLM1: {
        "langfuse.observation.type": "generation", **CONTEXT_LF,
        "langfuse.observation.metadata.prompt_version": "v3",  # a child's metadata stays off the trace
        "langfuse.observation.input": orjson.dumps([{"role": "user", "content": Q1}]).decode(),
        "langfuse.observation.output": '"Beijing"',
        "langfuse.observation.model.name": MODEL1, "langfuse.observation.model.parameters": '{"temperature":0.0}',
        "langfuse.observation.usage_details": '{"input":18,"output":2,"total":20}',
        "langfuse.observation.cost_details": '{"total":0.0}', "gen_ai.usage.cost": 0.0,
    },
    LLM2: {
        "langfuse.observation.type": "generation", **CONTEXT_LF,
        "langfuse.observation.input": orjson.dumps([{"role": "user", "content": Q2}]).decode(),
        "langfuse.observation.output": '"Tokyo"', "langfuse.observation.model.name": "gpt-4o-mini",
        "langfuse.observation.usage_details": '{"input":18,"output":2,"total":20}',
        "langfuse.observation.cost_details": '{"total":3.9e-6}', "gen_ai.usage.cost": 3.9e-06,
    },
    TOOL: {"langfuse.observation.type": "tool", **CONTEXT_LF,
           "langfuse.observation.input": '"What\'s the capital of China?"',
           "langfuse.observation.output": "[0.1,0.2,0.3]"},
    AGENT: {"langfuse.observation.type": "agent", **CONTEXT_LF, "langfuse.observation.input": '"Who are you?"',
            "langfuse.observation.level": "ERROR",
            "langfuse.observation.status_message": "RateLimitError: 429 Too Many Requests"},
    ROOT: {"langfuse.observation.type": "chain", **CONTEXT_LF,
           "langfuse.trace.metadata.user_id": "user-123", "langfuse.observation.metadata.user_id": "user-123",
           "langfuse.trace.metadata.org_id": "org-456", "langfuse.observation.metadata.org_id": "org-456",
           "langfuse.observation.output": '["Beijing","Tokyo"]'},
}
BRAINTRUST = {
    LLM1: {
        "braintrust.span_attributes": '{"type":"llm","name":"query_llm"}',
        "braintrust.input_json": orjson.dumps([{"role": "user", "content": Q1}]).decode(),
        "braintrust.output_json": '"Beijing"',
        "braintrust.metadata": orjson.dumps({"prompt_version": "v3", "model": MODEL1, "provider": "openrouter",
                                             "temperature": 0.0, "session_id": "session-42",
                                             "user_id": "user-123"}).decode(),
        "braintrust.metrics": '{"prompt_tokens":18,"completion_tokens":2,"tokens":20,"estimated_cost":0.0}',
    },
    LLM2: {
        "braintrust.span_attributes": '{"type":"llm","name":"query_llm"}',
        "braintrust.input_json": orjson.dumps([{"role": "user", "content": Q2}]).decode(),
        "braintrust.output_json": '"Tokyo"',
        "braintrust.metadata": orjson.dumps({"model": "gpt-4o-mini", "provider": "openai",
                                             "session_id": "session-42", "user_id": "user-123"}).decode(),
        "braintrust.metrics": '{"prompt_tokens":18,"completion_tokens":2,"tokens":20,"estimated_cost":3.9e-6}',
    },
    TOOL: {"braintrust.span_attributes": '{"type":"tool","name":"query_embedding"}',
           "braintrust.input_json": '"What\'s the capital of China?"', "braintrust.output_json": "[0.1,0.2,0.3]",
           "braintrust.metadata": '{"session_id":"session-42","user_id":"user-123"}'},
    AGENT: {"braintrust.span_attributes": '{"type":"task","name":"query_agent"}',
            "braintrust.input_json": '"Who are you?"',
            "braintrust.metadata": '{"session_id":"session-42","user_id":"user-123"}'},
    ROOT: {"braintrust.span_attributes": '{"type":"task","name":"my_llm_application"}',
           "braintrust.output_json": '["Beijing","Tokyo"]',
           "braintrust.metadata": '{"user_id":"user-123","org_id":"org-456","session_id":"session-42"}',
           "braintrust.tags": ["capitals"]},
}
RAW = {TOOL: {"tool.description": "Query embedding"}}


def expected(kind: str, span_id: str) -> dict[str, Any]:
    """Every attribute exporter `kind` must put on span `span_id`, and nothing else."""
    layers = {"otlp_http": (GENAI, OPENINFERENCE), "phoenix": (OPENINFERENCE,), "langfuse": (GENAI, LANGFUSE),
              "braintrust": (GENAI, BRAINTRUST)}[kind]
    out: dict[str, Any] = {}
    for layer in (*layers, RAW):
        out.update(layer.get(span_id, {}))
    return out


CONFIGS = {
    "otlp_http": lambda url: {"endpoint": url},
    "phoenix": lambda url: {"endpoint": url},
    "langfuse": lambda url: {"host": url, "public_key": "pk-lf-1", "secret_key": "sk-lf-1"},
    "braintrust": lambda url: {"api_url": url, "api_key": "bt-1"},
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def sent(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """Send the example trace through one exporter; yield (kind, the server's one decoded request)."""
    import anyio

    kind = request.param
    with OTLPServer() as server:
        cls = registry.load("exporters", kind)
        problems: list[str] = []
        config = build_dataclass(cls.Config, CONFIGS[kind](server.url), kind, problems)
        assert not problems
        exporter = cls(config, Context(name=kind, state_dir=Path(tempfile.mkdtemp(dir="/tmp")),
                                       counters=Counters()))

        async def run() -> None:
            await exporter.open()
            try:
                await exporter.export(TRACE)
            finally:
                await exporter.aclose()

        anyio.run(run)
        (req,) = server.requests
        yield kind, req


def by_id(req: Any) -> dict[str, dict[str, Any]]:
    return {s["span_id"]: s for s in req.spans}


@pytest.mark.parametrize("span_id", [LLM1, LLM2, TOOL, AGENT, ROOT], ids=["llm1", "llm2", "tool", "agent", "root"])
def test_attributes_exactly(sent: tuple[str, Any], span_id: str):
    """Each span carries exactly the attributes its exporter must give it (checked key by key)."""
    kind, req = sent
    got = by_id(req)[span_id]["attributes"]
    want = expected(kind, span_id)
    for key, value in want.items():
        assert key in got, f"{kind}: {key} missing on {span_id}"
        assert got[key] == value, f"{kind}: {key} on {span_id}: {got[key]!r} != {value!r}"
    assert sorted(set(got) - set(want)) == [], f"{kind}: unexpected attributes on {span_id}"


def test_span_structure(sent: tuple[str, Any]):
    """Ids, parents, names, kinds, times and statuses survive as the record said."""
    kind, req = sent
    spans = by_id(req)
    assert set(spans) == {r["span_id"] for r in TRACE}
    for rec in TRACE:
        span = spans[rec["span_id"]]
        assert span["trace_id"] == rec["trace_id"]
        assert span["parent_id"] == rec["parent_id"]
        assert span["name"] == rec["name"]
        assert (span["start_ns"], span["end_ns"]) == (rec["start_ns"], rec["end_ns"])
        assert span["kind"] == rec.get("otel_kind", "client" if rec["kind"] == "llm" else "internal")
        assert span["scope"] == "shipper"
    assert [spans[i]["status"] for i in (LLM1, LLM2, TOOL, AGENT, ROOT)] == ["ok", "ok", "unset", "error", "ok"]
    assert spans[AGENT]["status_message"] == "RateLimitError: 429 Too Many Requests"


def test_error_becomes_an_exception_event(sent: tuple[str, Any]):
    """A record's error becomes an `exception` event at the span's end."""
    _, req = sent
    (event,) = by_id(req)[AGENT]["events"]
    assert event == {"name": "exception", "time_ns": TRACE[3]["end_ns"],
                     "attributes": {"exception.type": "RateLimitError", "exception.message": "429 Too Many Requests",
                                    "exception.stacktrace": "Traceback (most recent call last): ..."}}


def test_record_events_are_kept(sent: tuple[str, Any]):
    """The record's own events arrive with their time and attributes."""
    _, req = sent
    assert by_id(req)[ROOT]["events"] == [{"name": "retry", "time_ns": 1763683200000000500,
                                           "attributes": {"attempt": 1}}]


def test_resource(sent: tuple[str, Any]):
    """service → service.name, the record's resource kept; Phoenix and otlp_http also name the project."""
    kind, req = sent
    spans = by_id(req)
    project = {"openinference.project.name": "hinbox"} if kind in ("phoenix", "otlp_http") else {}
    assert spans[LLM1]["resource"] == {"service.name": "hinbox", **project}
    assert spans[ROOT]["resource"] == {"service.name": "hinbox", "deployment.environment": "dev", **project}


def test_routing_headers(sent: tuple[str, Any]):
    """Each backend gets its auth and project routing headers."""
    kind, req = sent
    headers = {
        "otlp_http": {},
        "phoenix": {"x-project-name": "hinbox"},
        "langfuse": {"authorization": "Basic cGstbGYtMTpzay1sZi0x", "x-langfuse-ingestion-version": "4"},
        "braintrust": {"authorization": "Bearer bt-1", "x-bt-parent": "project_name:hinbox"},
    }[kind]
    for name, value in headers.items():
        assert req.header(name) == value
    if kind in ("otlp_http", "phoenix"):
        assert req.header("authorization") is None


def test_trace_wide_fields_are_copied_within_a_batch():
    """A span lacking session_id, user_id or tags gets them from another span of its trace in the batch."""
    from shipper.otlp.encode import fill_trace_wide

    bare = {k: v for k, v in TRACE[0].items() if k not in ("session_id", "user_id", "tags")}
    other_trace = {**bare, "trace_id": "f" * 32}
    out = fill_trace_wide([bare, TRACE[1], other_trace])
    assert (out[0]["session_id"], out[0]["user_id"], out[0]["tags"]) == ("session-42", "user-123", ["capitals"])
    assert "session_id" not in out[2]
    assert "session_id" not in bare  # the input record is not changed


def test_raw_attributes_win_and_values_convert():
    """Raw attributes override mapped ones; ints, floats, bools, lists and big ints convert to OTLP values."""
    from shipper.otlp.encode import Encoder
    from shipper.otlp.semconv import openinference_attributes
    from shipper.testing import spans_of

    rec = {**TRACE[0], "attributes": {"llm.model_name": "mine", "n": 2**70, "flag": True, "xs": [1, 2],
                                      "f": 1.5}}
    (span,), _ = spans_of(Encoder((openinference_attributes,)).request([rec]))
    attrs = span["attributes"]
    assert attrs["llm.model_name"] == "mine"
    assert attrs["n"] == str(2**70) and attrs["flag"] is True and attrs["xs"] == [1, 2] and attrs["f"] == 1.5


def test_messages_with_tool_calls_map_to_both_conventions():
    """Tool calls in messages become OpenInference tool_call attributes and GenAI tool_call parts."""
    from shipper.otlp.semconv import genai_attributes, openinference_attributes

    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}
    rec = {**TRACE[0], "llm": {"model": "m", "input_messages": [{"role": "user", "content": "hi"}],
                               "output_messages": [{"role": "assistant", "content": None, "tool_calls": [call]}],
                               "usage": {"cache_read_tokens": 4, "reasoning_tokens": 3},
                               "time_to_first_token_ns": 250_000_000}}
    oi = openinference_attributes(rec)
    assert oi["llm.output_messages.0.message.tool_calls.0.tool_call.id"] == "call_1"
    assert oi["llm.output_messages.0.message.tool_calls.0.tool_call.function.name"] == "lookup"
    assert oi["llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments"] == '{"q":"x"}'
    assert oi["llm.token_count.prompt_details.cache_read"] == 4
    assert oi["llm.token_count.completion_details.reasoning"] == 3
    genai = genai_attributes(rec)
    assert orjson.loads(genai["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "lookup",
                                         "arguments": '{"q":"x"}'}], "finish_reason": "tool_call"}]
    assert genai["gen_ai.usage.cache_read.input_tokens"] == 4
    assert genai["gen_ai.usage.reasoning.output_tokens"] == 3
    assert genai["gen_ai.response.time_to_first_chunk"] == 0.25


async def test_projects_route_to_their_own_credentials_and_headers():
    """Langfuse uses each project's key pair; Phoenix and Braintrust name each project in header (and resource)."""
    import base64

    batch = TRACE[:2] + [{**rec, "project": "other"} for rec in TRACE[2:]]
    with OTLPServer() as server:
        configs = {
            "langfuse": {"host": server.url, "public_key": "pk-d", "secret_key": "sk-d",
                         "projects": {"other": {"public_key": "pk-o", "secret_key": "sk-o"}}},
            "phoenix": {"endpoint": server.url},
            "braintrust": {"api_url": server.url, "api_key": "k"},
        }
        for kind, settings in configs.items():
            cls = registry.load("exporters", kind)
            problems: list[str] = []
            exporter = cls(build_dataclass(cls.Config, settings, kind, problems),
                           Context(name=kind, state_dir=Path("/tmp"), counters=Counters()))
            assert not problems
            try:
                await exporter.export(batch)
            finally:
                await exporter.aclose()
        lf, phx, bt = server.requests[0:2], server.requests[2:4], server.requests[4:6]
    assert [base64.b64decode(r.header("authorization").split()[1]) for r in lf] == [b"pk-d:sk-d", b"pk-o:sk-o"]
    assert [r.header("x-project-name") for r in phx] == ["hinbox", "other"]
    assert [r.resources[0]["openinference.project.name"] for r in phx] == ["hinbox", "other"]
    assert [r.header("x-bt-parent") for r in bt] == ["project_name:hinbox", "project_name:other"]
    assert [len(r.spans) for r in lf + phx + bt] == [2, 3] * 3


def test_otlp_http_sends_only_the_conventions_asked_for() -> None:
    """`conventions: [genai]` sends gen_ai.* without OpenInference's llm.* / openinference.* attributes."""
    import asyncio

    from shipper.config import build_dataclass
    from shipper.stats import Counters
    from shipper.testing import OTLPServer

    records = [orjson.loads(line) for line in (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines()]
    cls = registry.load("exporters", "otlp_http")
    with OTLPServer() as server:
        problems: list[str] = []
        config = build_dataclass(cls.Config, {"endpoint": server.url, "conventions": ["genai"]}, "", problems)
        assert problems == []
        exporter = cls(config, Context(name="o", state_dir=Path("/tmp"), counters=Counters()))

        async def send() -> None:
            await exporter.open()
            try:
                await exporter.export(records)
            finally:
                await exporter.aclose()

        asyncio.run(send())
        keys = {key for span in server.spans() for key in span["attributes"]}
    assert "gen_ai.request.model" in keys
    assert not {k for k in keys if k.startswith(("llm.", "openinference."))}


def test_the_decoder_reads_back_what_the_mappers_write():
    """GenAI uri/blob parts, tool call arguments/result and Langfuse usage details lift back into the record."""
    from shipper.exporters.langfuse import langfuse_attributes
    from shipper.otlp.decode import lift
    from shipper.otlp.semconv import genai_attributes

    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
               {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]
    rec = {**TRACE[0], "llm": {"input_messages": [{"role": "user", "content": content}],
                               "usage": {"input_tokens": 100, "output_tokens": 50, "cache_read_tokens": 60,
                                         "reasoning_tokens": 20}}}
    lifted = lift(genai_attributes(rec))
    assert lifted["llm"]["input_messages"] == [{"role": "user", "content": content}]
    tool = {**TRACE[2], "input": {"q": "x"}, "output": [1, 2]}
    lifted = lift(genai_attributes(tool, tool_content=True))
    assert (lifted["kind"], lifted["input"], lifted["output"]) == ("tool", {"q": "x"}, [1, 2])
    only_langfuse = {k: v for k, v in langfuse_attributes(rec).items() if k.startswith("langfuse.")}
    assert lift(only_langfuse)["llm"]["usage"] == rec["llm"]["usage"]


def test_phoenix_input_and_output_fall_back_to_the_messages():
    """A record with messages but no input / output still gets OpenInference input.value / output.value."""
    from shipper.otlp.semconv import openinference_attributes

    bare = {k: v for k, v in TRACE[0].items() if k not in ("input", "output")}
    attrs = openinference_attributes(bare)
    assert orjson.loads(attrs["input.value"]) == TRACE[0]["llm"]["input_messages"]
    assert orjson.loads(attrs["output.value"]) == TRACE[0]["llm"]["output_messages"]
    assert attrs["input.mime_type"] == attrs["output.mime_type"] == "application/json"
