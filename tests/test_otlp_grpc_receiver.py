"""Receiver otlp_grpc: the OpenTelemetry SDK's own gRPC exporter against a real daemon, answered as OTLP asks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import Compression, OTLPSpanExporter
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

from shipper.component import Context, Intake
from shipper.otel import span_record
from shipper.receivers.otlp_grpc import TRACE_SERVICE, Config, OTLPGRPCReceiver
from shipper.stats import Counters
from shipper.testing import OTLPServer, Reply

EXPORT = f"/{TRACE_SERVICE}/Export"


def _sdk_spans(service: str = "grpc-app") -> list[Any]:
    """Finished spans of the real SDK: a server span and an LLM child with gen_ai attributes and an event."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.grpc", "0.1")
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes={"http.route": "/q"}):
        with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat",
                                                              "gen_ai.request.model": "m1",
                                                              "gen_ai.usage.input_tokens": 3,
                                                              "session.id": "s1"}) as span:
            span.add_event("token", {"n": 1})
    return list(memory.get_finished_spans())


def _export(port: int, spans: list[Any], **options: Any) -> str:
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, **options)
    try:
        return exporter.export(spans).name
    finally:
        exporter.shutdown()


def _call(port: int, method: str, body: bytes, timeout: float = 10.0) -> bytes:
    """One unary call with raw bytes, as any gRPC client makes it."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return channel.unary_unary(method)(body, timeout=timeout)


@pytest.fixture(scope="module")
def grpc_daemon():
    """A daemon subprocess with otlp_grpc and otlp_http receivers, both on port 0, and a file exporter."""
    daemon = Daemon()
    daemon.config["receivers"]["grpc"] = {"type": "otlp_grpc", "endpoint": "127.0.0.1:0"}
    daemon.config["receivers"]["http"] = {"type": "otlp_http", "endpoint": "127.0.0.1:0"}
    daemon.config["exporters"]["file"]["batch"] = {"max_delay": "50ms"}
    daemon.set_config().start()
    receivers = daemon.status()["receivers"]
    daemon.grpc_port = receivers["grpc"]["port"]  # type: ignore[attr-defined]
    daemon.http_port = receivers["http"]["port"]  # type: ignore[attr-defined]
    yield daemon
    daemon.cleanup()


def test_sdk_grpc_exporter_gives_the_same_records_as_the_in_process_exporter(grpc_daemon) -> None:
    """Spans from the SDK's OTLP/gRPC exporter (gzip) reach the file exporter exactly as ShipperSpanExporter
    would have written them; the bound port shows in the log and in status."""
    spans = _sdk_spans()
    assert _export(grpc_daemon.grpc_port, spans, compression=Compression.Gzip) == "SUCCESS"
    trace_id = format(spans[0].get_span_context().trace_id, "032x")
    written = {r["span_id"]: r for r in wait_records(grpc_daemon, 2, trace_id=trace_id)}
    assert written == {r["span_id"]: r for r in (span_record(s) for s in spans)}
    chat = next(r for r in written.values() if r["name"] == "chat")
    assert chat["kind"] == "llm" and chat["llm"]["model"] == "m1" and chat["session_id"] == "s1"
    assert f"Listening for OTLP/gRPC on 127.0.0.1:{grpc_daemon.grpc_port}" in grpc_daemon.log()
    counts = wait_for(lambda: grpc_daemon.status()["receivers"]["grpc"].get("received", 0) >= 2)
    assert counts


def test_invalid_span_is_answered_in_partial_success_and_set_aside(grpc_daemon) -> None:
    """A span that is not a valid record is counted malformed, set aside, and named in partial_success."""
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x17" * 16, span_id=b"\x18" * 8, name="grpc-ends-before-it-starts", start_time_unix_nano=5,
        end_time_unix_nano=4)
    answer = ExportTraceServiceResponse.FromString(_call(grpc_daemon.grpc_port, EXPORT,
                                                         request.SerializeToString()))
    assert answer.partial_success.rejected_spans == 1
    assert "end_before_start" in answer.partial_success.error_message
    rejected = grpc_daemon.state / "rejected" / "rejected.ndjson"
    text = wait_for(lambda: rejected.exists() and "grpc-ends-before-it-starts" in rejected.read_text()
                    and rejected.read_text())
    assert "grpc 127.0.0.1:" in text  # the peer is the source


def test_a_big_request_is_read_in_a_worker_thread_and_every_span_arrives(grpc_daemon) -> None:
    """A request over THREAD_BODY_BYTES is decoded off the event loop (`read_in_thread`), all its spans queued."""
    from shipper.receivers.otlp_intake import THREAD_BODY_BYTES

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(1000):
        span = scope.spans.add(trace_id=b"\x21" * 16, span_id=(i + 1).to_bytes(8, "big"), name="big",
                               start_time_unix_nano=1, end_time_unix_nano=2)
        span.attributes.add(key="note", value={"string_value": "z" * 540})
    body = request.SerializeToString()
    assert THREAD_BODY_BYTES < len(body) < 4 * 1024 * 1024  # within gRPC's default message size
    before = grpc_daemon.status()["receivers"]["grpc"].get("read_in_thread", 0)
    answer = ExportTraceServiceResponse.FromString(_call(grpc_daemon.grpc_port, EXPORT, body))
    assert answer.partial_success.rejected_spans == 0
    got = wait_records(grpc_daemon, 1000, trace_id="21" * 16)
    assert sorted(int(r["span_id"], 16) for r in got) == list(range(1, 1001))
    assert grpc_daemon.status()["receivers"]["grpc"]["read_in_thread"] == before + 1


def test_unreadable_body_is_invalid_argument(grpc_daemon) -> None:
    """Bytes that are not an ExportTraceServiceRequest get INVALID_ARGUMENT saying so."""
    with pytest.raises(grpc.RpcError) as caught:
        _call(grpc_daemon.grpc_port, EXPORT, b"\xff\xff\xff\xff")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a readable OTLP ExportTraceServiceRequest" in caught.value.details()


@pytest.mark.parametrize("service", ["metrics.v1.MetricsService", "logs.v1.LogsService"])
def test_metrics_and_logs_answer_traces_only(grpc_daemon, service: str) -> None:
    """OTLP metrics and logs are refused with UNIMPLEMENTED and a message that says traces only."""
    with pytest.raises(grpc.RpcError) as caught:
        _call(grpc_daemon.grpc_port, f"/opentelemetry.proto.collector.{service}/Export", b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "traces only" in caught.value.details()


def test_grpc_client_at_the_http_port_is_told_the_grpc_port(grpc_daemon) -> None:
    """The SDK's gRPC stub pointed at the OTLP/HTTP port gets an error naming the otlp_grpc receiver's port."""
    with pytest.raises(grpc.RpcError) as caught:
        _call(grpc_daemon.http_port, EXPORT, ExportTraceServiceRequest().SerializeToString())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert f"127.0.0.1:{grpc_daemon.grpc_port}" in caught.value.details()
    assert "OTLP/HTTP" in caught.value.details()
    # the HTTP receiver still serves HTTP afterwards
    assert _export(grpc_daemon.grpc_port, _sdk_spans("after-the-hint")) == "SUCCESS"


def test_ok_means_in_the_queue_kill_9_loses_nothing(daemon_factory) -> None:
    """Answered OK while the backend is down, the daemon killed with SIGKILL, restarted: the spans arrive."""
    with OTLPServer(default=Reply.status(503)) as backend:
        daemon = daemon_factory()
        daemon.config["receivers"]["grpc"] = {"type": "otlp_grpc", "endpoint": "127.0.0.1:0"}
        daemon.config["exporters"] = {"backend": {
            "type": "otlp_http", "endpoint": backend.url,
            "retry": {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed": "1h"}}}
        daemon.set_config().start()
        spans = _sdk_spans("durable")
        assert _export(daemon.status()["receivers"]["grpc"]["port"], spans) == "SUCCESS"
        daemon.kill()
        assert not any(s["name"] == "chat" for s in backend.spans())
        backend.default = Reply.ok()
        daemon.start()
        names = wait_for(lambda: {s["name"] for s in backend.spans()} >= {"request", "chat"}, timeout=20)
        assert names


def test_off_in_the_embedded_default_and_local_by_default() -> None:
    """The embedded default has no otlp_grpc receiver; enabled without an endpoint it binds 127.0.0.1:4317."""
    from shipper.config import load_config

    assert all(spec.type != "otlp_grpc" for spec in load_config(None).receivers)
    assert Config().endpoint == "127.0.0.1:4317" and Config().check() == []
    assert Config(endpoint="4317").check() == [
        'endpoint: expected host:port like "127.0.0.1:4317" (port 0 picks a free one), got \'4317\'']


def test_config_names_the_extra_when_grpcio_is_missing(tmp_path: Path) -> None:
    """Without grpcio, `shipper check` on a config with otlp_grpc says which extra to install."""
    config = tmp_path / "c.yaml"
    config.write_text("receivers:\n  g: {type: otlp_grpc}\nexporters:\n  f: {type: file}\n")
    code = ("import sys; sys.modules['grpc'] = None\n"
            "from shipper.cli import main\n"
            f"sys.exit(main(['check', '-c', {str(config)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "receivers.g.type" in done.stdout + done.stderr and "shipper[grpc]" in done.stdout + done.stderr


# -- in-process: the commit contract -----------------------------------------------------------------


@asynccontextmanager
async def running(deliver: Any, **settings: Any) -> AsyncIterator[OTLPGRPCReceiver]:
    """A receiver on 127.0.0.1 port 0 handing intakes to `deliver`."""
    receiver = OTLPGRPCReceiver(Config(endpoint="127.0.0.1:0", **settings),
                                Context(name="grpc", state_dir=Path("/nonexistent"), counters=Counters()))
    await receiver.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver.run, deliver)
            yield receiver
            tg.cancel_scope.cancel()
    finally:
        await receiver.aclose()


def _one_span_request() -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="one", start_time_unix_nano=1, end_time_unix_nano=2)
    return request.SerializeToString()


async def test_answer_waits_for_the_commit() -> None:
    """OK comes only after the pipeline commits the request's mark; until then the call is pending."""
    intakes: list[Intake] = []

    async def deliver(intake: Intake) -> None:
        intakes.append(intake)

    async with running(deliver) as receiver, grpc.aio.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
        call = channel.unary_unary(EXPORT)(_one_span_request(), timeout=10)
        await wait_async(lambda: intakes)
        await anyio.sleep(0.2)
        assert not call.done()
        await receiver.commit(intakes[0].mark)
        answer = ExportTraceServiceResponse.FromString(await call)
    assert answer == ExportTraceServiceResponse()
    assert [r["name"] for r in intakes[0].records] == ["one"]


async def test_full_intake_is_unavailable_with_retry_info() -> None:
    """When intake takes nothing (full), the answer is UNAVAILABLE with a RetryInfo, and nothing is held."""
    send, receive = anyio.create_memory_object_stream[Intake](0)  # nobody reads: always full
    async with running(send.send) as receiver, grpc.aio.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(EXPORT)(_one_span_request(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "intake is full" in caught.value.details()
    metadata = dict(caught.value.trailing_metadata() or ())
    assert metadata["google.rpc.retryinfo-bin"] == b"\x0a\x02\x08\x01"
    assert receiver.counters.counts["intake_full"] == 1
    send.close()
    receive.close()


async def test_over_max_body_bytes_is_resource_exhausted() -> None:
    """A request over max_body_bytes is refused by grpc before it is decoded; nothing is delivered."""
    intakes: list[Intake] = []

    async def deliver(intake: Intake) -> None:
        intakes.append(intake)

    async with running(deliver, max_body_bytes=4096) as receiver, \
            grpc.aio.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(EXPORT)(b"\x0a" + b"\x80\x40" + b"x" * 8192, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert intakes == []


async def test_sdk_exporter_retries_after_a_full_answer_and_gets_through() -> None:
    """The OpenTelemetry gRPC exporter, answered UNAVAILABLE + RetryInfo once (intake full), retries: SUCCESS,
    and the spans were handed over exactly once."""
    intakes: list[Intake] = []

    async def deliver(intake: Intake) -> None:
        if not intakes and not getattr(deliver, "was_full", False):
            deliver.was_full = True  # type: ignore[attr-defined]
            await anyio.sleep(30)  # intake full: the receiver gives up after HANDOVER_WAIT
        intakes.append(intake)
        await receiver.commit(intake.mark)

    async with running(deliver) as receiver:
        spans = _sdk_spans("retried")
        result = await anyio.to_thread.run_sync(lambda: _export(receiver.port, spans, timeout=20))
    assert result == "SUCCESS"
    assert receiver.counters.counts["intake_full"] == 1
    assert len(intakes) == 1 and {r["name"] for r in intakes[0].records} == {"request", "chat"}


async def wait_async(predicate: Any, timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (found := predicate()):
            await anyio.sleep(0.01)
    return found


async def test_a_port_in_use_is_a_config_error_naming_the_endpoint() -> None:
    """A second receiver on a bound port fails to open with the key and the endpoint, not a gRPC trace."""
    from shipper.errors import ConfigError

    async with running(lambda intake: anyio.sleep(0)) as first:
        second = OTLPGRPCReceiver(Config(endpoint=f"127.0.0.1:{first.port}"),
                                  Context(name="again", state_dir=Path("/nonexistent"), counters=Counters()))
        with pytest.raises(ConfigError) as caught:
            await second.open()
        await second.aclose()
    assert f"receivers.again.endpoint: cannot listen on 127.0.0.1:{first.port}" in str(caught.value)
