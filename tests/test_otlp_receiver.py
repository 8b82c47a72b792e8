"""Receiver otlp_http: OTLP/HTTP protobuf and JSON from real senders, answered as OTLP asks."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no price-list download

import gzip
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support import Daemon, wait_for, wait_records

import shipper
from shipper.client import transport
from shipper.component import Context, Intake
from shipper.config import build_dataclass, load_config
from shipper.otel import ShipperSpanExporter, span_record
from shipper.otlp.encode import Encoder, to_json
from shipper.otlp.semconv import genai_attributes, openinference_attributes
from shipper.receivers.otlp_http import Config, OTLPHTTPReceiver
from shipper.stats import Counters

REPO = Path(__file__).resolve().parents[1]
PROTOBUF = {"content-type": "application/x-protobuf"}


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[OTLPHTTPReceiver, list[Intake], str]]:
    """A receiver bound on 127.0.0.1 port 0, serving; yields it, what it delivered, and its base URL."""
    config = Config(endpoint="127.0.0.1:0", **settings)
    receiver = OTLPHTTPReceiver(config, Context(name="otlp", state_dir=Path("/nonexistent"), counters=Counters()))
    intakes: list[Intake] = []

    async def deliver(intake: Intake) -> None:
        intakes.append(intake)
        await receiver.commit(intake.mark)  # as the pipeline does once the records are queued

    await receiver.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver.run, deliver)
            yield receiver, intakes, f"http://127.0.0.1:{receiver.port}"
            tg.cancel_scope.cancel()
    finally:
        await receiver.aclose()


def _sdk_spans() -> list[Any]:
    """Finished spans of the real SDK: a server span with a child that has an event and gen_ai attributes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-app", "team": "search"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.receiver", "0.1")
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes={"http.route": "/q"}):
        with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat",
                                                              "gen_ai.request.model": "m1",
                                                              "gen_ai.usage.input_tokens": 3,
                                                              "session.id": "s1", "tag.tags": ["a", "b"]}) as s:
            s.add_event("token", {"n": 1})
    return list(memory.get_finished_spans())


def _records(intakes: list[Intake]) -> list[dict[str, Any]]:
    return [r for intake in intakes for r in intake.records]


async def test_sdk_exporter_protobuf_gzip_gives_the_same_records_as_the_in_process_exporter() -> None:
    """Spans sent by the SDK's OTLP/HTTP exporter (protobuf, gzip) decode exactly as ShipperSpanExporter's."""
    spans = _sdk_spans()
    async with running() as (receiver, intakes, url):
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip)
        result = await anyio.to_thread.run_sync(exporter.export, spans)
        exporter.shutdown()
    assert result.name == "SUCCESS"
    received = {r["span_id"]: r for r in _records(intakes)}
    assert received == {r["span_id"]: r for r in (span_record(s) for s in spans)}
    chat = next(r for r in received.values() if r["name"] == "chat")
    assert chat["kind"] == "llm" and chat["llm"]["model"] == "m1" and chat["tags"] == ["a", "b"]
    assert receiver.counters.counts["received"] == 2


async def test_json_and_the_langfuse_path_round_trip_shipper_records() -> None:
    """OTLP/JSON (ids in hex) on Langfuse's path, built by shipper's own encoder, gives the records back."""
    original = {"v": 1, "trace_id": "ab" * 16, "span_id": "cd" * 8, "parent_id": "ef" * 8, "name": "answer",
                "kind": "llm", "otel_kind": "client", "start_ns": 1_000, "end_ns": 2_000, "status": "ok",
                "service": "svc", "session_id": "s", "user_id": "u", "tags": ["t"],
                "llm": {"model": "m", "provider": "p", "usage": {"input_tokens": 1, "output_tokens": 2},
                        "cost_usd": 0.5}, "input": {"q": "x"}, "output": "y"}
    body = to_json(Encoder([genai_attributes, openinference_attributes]).request([original]))
    async with running() as (_, intakes, url):
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{url}/api/public/otel/v1/traces", content=gzip.compress(body),
                                       headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == {}
    (record,) = _records(intakes)
    for key in ("trace_id", "span_id", "parent_id", "name", "kind", "otel_kind", "start_ns", "end_ns", "status",
                "service", "session_id", "user_id", "tags", "input", "output"):
        assert record[key] == original[key], key
    assert {k: record["llm"][k] for k in original["llm"]} == original["llm"]


async def test_invalid_spans_are_rejected_with_partial_success() -> None:
    """A span with an all-zero trace id is set aside and counted in partial_success; the valid one is taken."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    good = spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="good", start_time_unix_nano=1,
                     end_time_unix_nano=2)
    spans.add(trace_id=b"\x00" * 16, span_id=b"\x03" * 8, name="bad", start_time_unix_nano=1, end_time_unix_nano=2)
    async with running() as (_, intakes, url):
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{url}/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert answer.status_code == 200
    response = ExportTraceServiceResponse.FromString(answer.content)
    assert response.partial_success.rejected_spans == 1
    assert "zero_trace_id" in response.partial_success.error_message
    (intake,) = intakes
    assert [r["name"] for r in intake.records] == [good.name]
    assert [r.reason for r in intake.rejects] == ["zero_trace_id"]


async def test_langfuse_sdk_attributes_are_lifted() -> None:
    """Spans shaped like the Langfuse SDK's (langfuse.* attributes, Basic auth) on its path become full records."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "lf-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("langfuse-sdk").start_as_current_span("generate", attributes={
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "claude-x",
        "langfuse.observation.input": '[{"role": "user", "content": "hi"}]',
        "langfuse.observation.output": '{"role": "assistant", "content": "yo"}',
        "langfuse.observation.model.parameters": '{"max_tokens": 10}',
        "langfuse.observation.usage_details": '{"input": 4, "output": 2, "total": 6}',
        "langfuse.observation.cost_details": '{"total": 0.25}',
        "langfuse.session.id": "lf-s", "langfuse.user.id": "lf-u", "langfuse.trace.tags": ["x", "y"],
        "langfuse.trace.metadata.plan": "pro",
    }) as span:
        pass
    async with running() as (_, intakes, url):
        exporter = OTLPSpanExporter(endpoint=f"{url}/api/public/otel/v1/traces",
                                    headers={"Authorization": "Basic cGs6c2s="})
        result = await anyio.to_thread.run_sync(exporter.export, memory.get_finished_spans())
        exporter.shutdown()
    assert result.name == "SUCCESS"
    (record,) = _records(intakes)
    assert record["span_id"] == format(span.get_span_context().span_id, "016x")
    assert record["kind"] == "llm" and record["service"] == "lf-app"
    assert (record["session_id"], record["user_id"], record["tags"]) == ("lf-s", "lf-u", ["x", "y"])
    assert record["input"] == [{"role": "user", "content": "hi"}]
    assert record["output"] == {"role": "assistant", "content": "yo"}
    assert record["metadata"] == {"plan": "pro"}
    assert record["llm"] == {"model": "claude-x", "params": {"max_tokens": 10}, "cost_usd": 0.25,
                             "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}}


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", "/v1/traces", {"content-type": "text/plain"}, b"x", 415),
        ("POST", "/v1/traces", {**PROTOBUF, "content-encoding": "br"}, b"x", 415),
        ("POST", "/v1/logs", PROTOBUF, b"", 404),
        ("GET", "/v1/traces", {}, b"", 405),
        ("POST", "/v1/traces", PROTOBUF, b"\xff\xff\xff", 400),
        ("POST", "/v1/traces", {"content-type": "application/json"}, b"[1,", 400),
        ("POST", "/v1/traces", {**PROTOBUF, "content-encoding": "gzip"}, b"not gzip", 400),
        ("POST", "/v1/traces", PROTOBUF, b"x" * 5000, 413),
        ("POST", "/v1/traces", {**PROTOBUF, "content-encoding": "gzip"}, gzip.compress(b"\0" * 100_000), 413),
    ],
    ids=["content-type", "encoding", "path", "method", "protobuf", "json", "gzip", "too-large", "gzip-bomb"],
)
async def test_bad_requests_get_the_right_status(method: str, path: str, headers: dict[str, str], body: bytes,
                                                 status: int) -> None:
    """Each kind of bad request gets its HTTP status and a message; nothing is delivered."""
    async with running(max_body_bytes=4096) as (receiver, intakes, url):
        async with httpx.AsyncClient() as client:
            answer = await client.request(method, f"{url}{path}", content=body, headers=headers)
    assert answer.status_code == status
    assert answer.content  # a google.rpc.Status saying what was wrong
    assert intakes == [] and receiver.counters.counts["refused_requests"] == 1


async def test_one_connection_carries_many_requests() -> None:
    """HTTP keep-alive: several exports over one connection are all answered and delivered."""
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="s", start_time_unix_nano=1, end_time_unix_nano=2)
    async with running() as (receiver, intakes, url):
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                answer = await client.post(f"{url}/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
                assert answer.status_code == 200
            assert receiver.statistics()["open_connections"] == 1
    assert len(intakes) == 3


async def test_a_silent_client_is_disconnected_after_the_timeout() -> None:
    """A client that stops mid-request is cut off after `timeout`, and the receiver keeps serving others."""
    async with running(timeout=0.2) as (receiver, intakes, url):
        stream = await anyio.connect_tcp("127.0.0.1", receiver.port)
        await stream.send(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\n")
        with anyio.fail_after(10):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while True:
                    await stream.receive()
        await stream.aclose()
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{url}/v1/traces", content=b"", headers=PROTOBUF)
    assert answer.status_code == 200 and intakes == []


def test_off_in_the_embedded_default_and_local_by_default() -> None:
    """The embedded default has no otlp_http receiver; enabled without an endpoint it binds 127.0.0.1:4318."""
    assert all(spec.type != "otlp_http" for spec in load_config(None).receivers)
    assert Config().endpoint == "127.0.0.1:4318" and Config().check() == []


def test_endpoint_is_checked() -> None:
    """A malformed endpoint is a config problem naming the key and the expected form."""
    problems: list[str] = []
    config = build_dataclass(Config, {"endpoint": "localhost"}, "receivers.otlp", problems)
    assert config.check() == ['endpoint: expected host:port like "127.0.0.1:4318" (port 0 picks a free one), '
                              "got 'localhost'"]


@pytest.fixture(scope="module")
def otlp_daemon():
    """A daemon subprocess with an otlp_http receiver on a free port, and this process's shim pointed at it."""
    daemon = Daemon()
    daemon.config["receivers"]["otlp"] = {"type": "otlp_http", "endpoint": "127.0.0.1:0"}
    daemon.config["exporters"]["file"]["batch"] = {"max_delay": "50ms"}
    daemon.set_config().start()
    shipper.configure(service="tests", socket=daemon.socket, spool_dir=daemon.spool)
    daemon.otlp_url = f"http://127.0.0.1:{daemon.status()['receivers']['otlp']['port']}"  # type: ignore[attr-defined]
    yield daemon
    transport.shutdown()
    daemon.cleanup()


def _without_peer(record: dict[str, Any]) -> dict[str, Any]:
    """A record minus what the unix_socket receiver adds (the sender's pid and uid)."""
    resource = {k: v for k, v in record.get("resource", {}).items()
                if k not in ("process.pid", "process.real_user.id")}
    return {**record, "resource": resource}


def test_same_spans_through_the_socket_and_otlp_http_arrive_identically(otlp_daemon) -> None:
    """One provider, two exporters (shipper's and the SDK's OTLP/HTTP): the daemon writes the same records."""
    import litellm
    from openinference.instrumentation.litellm import LiteLLMInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": "twice"}))
    provider.add_span_processor(SimpleSpanProcessor(ShipperSpanExporter()))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp_daemon.otlp_url}/v1/traces")))
    instrumentor = LiteLLMInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("tests.twice").start_as_current_span("outer", attributes={"x": [1, 2]}) as outer:
            litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                               mock_response="hello")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    trace_id = format(outer.get_span_context().trace_id, "032x")
    records = wait_records(otlp_daemon, 4, trace_id=trace_id)
    by_span: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_span.setdefault(record["span_id"], []).append(_without_peer(record))
    assert len(by_span) == 2
    for copies in by_span.values():
        assert len(copies) == 2 and copies[0] == copies[1]
    llm = next(c[0] for c in by_span.values() if c[0]["kind"] == "llm")
    assert llm["llm"]["usage"] == {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}


def test_an_unmodified_otel_app_ships_through_the_endpoint_variable(otlp_daemon) -> None:
    """An app using only the OpenTelemetry SDK and OTEL_EXPORTER_OTLP_ENDPOINT reaches the daemon's pipeline."""
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import BatchSpanProcessor\n"
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter\n"
        "p = TracerProvider(); p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))\n"
        "with p.get_tracer('plain').start_as_current_span('plain-otel-app') as s:\n"
        "    print(format(s.get_span_context().trace_id, '032x'))\n"
        "p.shutdown()\n"
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_daemon.otlp_url, "OTEL_SERVICE_NAME": "plain-app"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    (record,) = wait_records(otlp_daemon, 1, trace_id=out.stdout.strip())
    assert record["name"] == "plain-otel-app" and record["service"] == "plain-app"
    status = wait_for(lambda: otlp_daemon.status()["receivers"]["otlp"].get("received") and otlp_daemon.status())
    assert status["receivers"]["otlp"]["port"] == int(otlp_daemon.otlp_url.rsplit(":", 1)[1])


def test_rejected_spans_are_counted_and_set_aside_by_the_daemon(otlp_daemon) -> None:
    """A span that is not a valid record is answered in partial_success, counted as malformed, and logged."""
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x07" * 16, span_id=b"\x08" * 8, name="ends-before-it-starts", start_time_unix_nano=5,
        end_time_unix_nano=4)
    answer = httpx.post(f"{otlp_daemon.otlp_url}/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert ExportTraceServiceResponse.FromString(answer.content).partial_success.rejected_spans == 1
    status = wait_for(lambda: otlp_daemon.status()["pipeline"].get("malformed", {}).get("end_before_start")
                      and otlp_daemon.status())
    assert status["dropped"]["malformed"] >= 1
    log = wait_for(lambda: (otlp_daemon.state / "rejected" / "rejected.ndjson").exists()
                   and (otlp_daemon.state / "rejected" / "rejected.ndjson").read_text())
    assert "ends-before-it-starts" in log and "otlp" in log
