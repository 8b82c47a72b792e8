"""shipper.otel: spans of the real OpenTelemetry SDK reach a daemon subprocess as records v1."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no price-list download

import math

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from support import wait_records

import shipper
from shipper.otel import ShipperSpanExporter, install, span_record
from shipper.otlp.decode import OTelSpan, to_record
from shipper.record import validate


def _provider(service: str = "otel-test") -> tuple[TracerProvider, ShipperSpanExporter]:
    exporter = ShipperSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "ci"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _hex(span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def test_sdk_spans_arrive_with_attributes_events_links_and_resource(shipped_daemon) -> None:
    """start_as_current_span spans keep their attributes, kind, parent, events, links, status and resource."""
    provider, _ = _provider()
    tracer = provider.get_tracer("tests.otel", "1.2")
    with tracer.start_as_current_span("linked") as linked:
        pass
    with tracer.start_as_current_span("handle", kind=SpanKind.SERVER,
                                      attributes={"http.route": "/ask", "retries": 2, "ratio": 0.5,
                                                  "flags": [True, False], "names": ("a", "b")},
                                      links=[Link(linked.get_span_context(), {"why": "batch"})]) as root:
        with tracer.start_as_current_span("step") as child:
            child.add_event("cache miss", {"key": "k1"})
        root.set_status(Status(StatusCode.OK))
    trace_id, root_id = _hex(root)
    records = {r["name"]: r for r in wait_records(shipped_daemon, 2, trace_id=trace_id)}
    handle, step = records["handle"], records["step"]
    assert handle["span_id"] == root_id and "parent_id" not in handle
    assert handle["otel_kind"] == "server" and handle["status"] == "ok" and handle["kind"] == "span"
    assert handle["attributes"] == {"http.route": "/ask", "retries": 2, "ratio": 0.5, "flags": [True, False],
                                    "names": ["a", "b"], "otel.scope.name": "tests.otel",
                                    "otel.scope.version": "1.2"}
    assert handle["links"] == [{"trace_id": _hex(linked)[0], "span_id": _hex(linked)[1],
                                "attributes": {"why": "batch"}}]
    assert handle["service"] == "otel-test"
    assert handle["resource"]["deployment.environment"] == "ci"
    assert handle["resource"]["telemetry.sdk.name"] == "opentelemetry"
    assert step["parent_id"] == root_id and step["status"] == "unset"
    assert step["events"][0]["name"] == "cache miss" and step["events"][0]["attributes"] == {"key": "k1"}
    assert handle["start_ns"] <= step["start_ns"] <= step["end_ns"] <= handle["end_ns"]


def test_an_exception_becomes_the_record_error(shipped_daemon) -> None:
    """A span that raised has status error and error {type, message, stack}, not a duplicate exception event."""
    provider, _ = _provider()
    tracer = provider.get_tracer("tests.otel")
    with pytest.raises(ValueError):
        with tracer.start_as_current_span("fails") as span:
            span.add_event("before")
            raise ValueError("boom")
    (record,) = wait_records(shipped_daemon, 1, trace_id=_hex(span)[0])
    assert record["status"] == "error"
    assert record["error"]["type"] == "ValueError" and record["error"]["message"] == "boom"
    assert "raise ValueError" in record["error"]["stack"]
    assert [e["name"] for e in record["events"]] == ["before"]


def test_genai_attributes_are_lifted_into_llm_fields(shipped_daemon) -> None:
    """gen_ai.* attributes fill kind, llm (model, provider, params, messages, usage, ttft) and session_id."""
    provider, _ = _provider()
    tracer = provider.get_tracer("tests.otel")
    attributes = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.request.temperature": 0.2,
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 5,
        "gen_ai.conversation.id": "conv-1", "gen_ai.response.time_to_first_chunk": 0.25,
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]',
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", '
                                  '"name": "search", "arguments": {"q": "x"}}], "finish_reason": "tool_call"}]',
    }
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes=attributes) as span:
        pass
    (record,) = wait_records(shipped_daemon, 1, trace_id=_hex(span)[0])
    assert record["kind"] == "llm" and record["otel_kind"] == "client"
    assert record["session_id"] == "conv-1"
    assert record["llm"] == {
        "model": "gpt-4o", "response_model": "gpt-4o-2024-08-06", "provider": "openai", "operation": "chat",
        "params": {"temperature": 0.2}, "usage": {"input_tokens": 12, "output_tokens": 5},
        "input_messages": [{"role": "user", "content": "hi"}],
        "output_messages": [{"role": "assistant", "finish_reason": "tool_call", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q":"x"}'}}]}],
        "time_to_first_token_ns": 250_000_000,
    }
    assert record["attributes"]["gen_ai.request.model"] == "gpt-4o"  # passed through as well


def test_openinference_litellm_spans_arrive_lifted(shipped_daemon) -> None:
    """The OpenInference litellm instrumentor's span (litellm mock_response) arrives with llm, I/O, trace fields."""
    import litellm
    from openinference.instrumentation import using_attributes
    from openinference.instrumentation.litellm import LiteLLMInstrumentor

    provider, _ = _provider("oi-test")
    instrumentor = LiteLLMInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with using_attributes(session_id="s-oi", user_id="u-oi", tags=["t1", "t2"], metadata={"team": "x"}):
            response = litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                          mock_response="hello", temperature=0.3)
    finally:
        instrumentor.uninstrument()
    (record,) = wait_records(shipped_daemon, 1, session_id="s-oi")
    assert record["kind"] == "llm" and record["name"] == "completion" and record["status"] == "ok"
    assert (record["user_id"], record["tags"], record["metadata"]) == ("u-oi", ["t1", "t2"], {"team": "x"})
    llm = record["llm"]
    assert (llm["model"], llm["provider"]) == ("gpt-4o-mini", "openai")
    assert llm["usage"] == {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    assert llm["cost_usd"] == pytest.approx(1.35e-05)
    assert llm["params"]["temperature"] == 0.3
    assert llm["input_messages"] == [{"role": "user", "content": "hi"}]
    assert llm["output_messages"] == [{"role": "assistant", "content": response.choices[0].message.content}]
    assert record["input"] == {"messages": [{"role": "user", "content": "hi"}]}
    assert record["output"] == "hello"
    assert record["attributes"]["llm.model_name"] == "gpt-4o-mini"
    assert record["attributes"]["otel.scope.name"] == "openinference.instrumentation.litellm"


def test_installed_root_span_nests_under_the_current_shipper_span(shipped_daemon) -> None:
    """Under install(), an OTel root span started inside a shipper span is that span's child, same trace."""
    provider = install(service="nested-test", set_global=False)
    tracer = provider.get_tracer("tests.otel")
    with shipper.span("shipper-parent", kind="chain") as parent:
        with tracer.start_as_current_span("otel-child") as otel_root:
            with tracer.start_as_current_span("otel-grandchild"):
                pass
    with tracer.start_as_current_span("otel-alone") as alone:
        pass
    records = {r["name"]: r for r in wait_records(shipped_daemon, 3, trace_id=parent.trace_id)}
    assert records["otel-child"]["parent_id"] == parent.span_id
    assert records["otel-child"]["span_id"] == _hex(otel_root)[1]
    assert records["otel-grandchild"]["parent_id"] == records["otel-child"]["span_id"]
    assert records["otel-child"]["service"] == "nested-test"
    (lone,) = wait_records(shipped_daemon, 1, trace_id=_hex(alone)[0])
    assert _hex(alone)[0] != parent.trace_id and "parent_id" not in lone


def test_installed_spans_take_the_trace_wide_fields_around_them(shipped_daemon) -> None:
    """OTel spans inside trace_context() and a shipper span carry its session, user and tags; their own win."""
    provider = install(service="fields-test", set_global=False)
    tracer = provider.get_tracer("tests.otel")
    with shipper.trace_context(session_id="s-wide", user_id="u-wide", tags=["w"]):
        with shipper.span("outer") as outer:
            with tracer.start_as_current_span("plain"):
                with tracer.start_as_current_span("own", attributes={"session.id": "s-own"}):
                    pass
        with tracer.start_as_current_span("no-shipper-span") as alone:
            pass
    records = {r["name"]: r for r in wait_records(shipped_daemon, 3, trace_id=outer.trace_id)}
    assert (records["plain"]["session_id"], records["plain"]["user_id"], records["plain"]["tags"]) == (
        "s-wide", "u-wide", ["w"])
    assert records["own"]["session_id"] == "s-own" and records["own"]["user_id"] == "u-wide"
    (lone,) = wait_records(shipped_daemon, 1, trace_id=_hex(alone)[0])
    assert lone["session_id"] == "s-wide" and "parent_id" not in lone


def test_values_a_record_cannot_hold_are_made_valid() -> None:
    """Maps, lists holding None, bytes, non-finite floats and long keys become valid record attributes."""
    span = OTelSpan(trace_id="1" * 32, span_id="2" * 16, name="", start_ns=1, end_ns=2,
                    attributes={"map": {"a": 1}, "holes": [1, None], "raw": b"\x01\x02", "nan": math.nan,
                                "k" * 300: "long", "none": None, "ok": [1.5, 2.5]},
                    events=[("e", 1, {"nested": {"x": [1]}})], resource={"service.name": "svc"})
    record = validate(to_record(span))
    attrs = record["attributes"]
    assert attrs["map"] == '{"a":1}' and attrs["holes"] == "[1,null]" and attrs["raw"] == "0102"
    assert attrs["nan"] == "nan" and attrs["k" * 256] == "long" and "none" not in attrs
    assert attrs["ok"] == [1.5, 2.5]
    assert record["events"][0]["attributes"] == {"nested": '{"x":[1]}'}
    assert record["name"] == "unnamed" and record["service"] == "svc"


def test_unnamed_resource_takes_the_configured_service() -> None:
    """A resource with only OpenTelemetry's `unknown_service` name takes the exporter's service instead."""
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("x") as span:
        pass
    assert span_record(span, service="fallback")["service"] == "fallback"
    assert span_record(span)["service"].startswith("unknown_service")


def test_exporter_refuses_after_shutdown() -> None:
    """After shutdown() export reports FAILURE, as the SDK's contract asks; force_flush is immediate."""
    exporter = ShipperSpanExporter()
    assert exporter.force_flush() is True
    exporter.shutdown()
    assert exporter.export([]) is SpanExportResult.FAILURE
