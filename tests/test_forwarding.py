"""Forwarding (docs/forwarding.md): OTLP requests queued and sent on as they came, with real daemons,
a real OTel SDK sender and a real OTLP/HTTP backend that decodes what it gets."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import Daemon, wait_for

from shipper.otlp import forward
from shipper.status_text import render
from shipper.testing import OTLPServer, Reply

PROTOBUF = {"content-type": "application/x-protobuf"}


def _sdk_spans(n: int = 3) -> list[Any]:
    """Finished spans of the real SDK: a root and `n - 1` LLM children with gen_ai attributes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "fwd-app", "team": "search"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.forwarding", "0.1")
    with tracer.start_as_current_span("request", attributes={"http.route": "/q"}):
        for i in range(n - 1):
            with tracer.start_as_current_span("chat", attributes={"gen_ai.request.model": "m1",
                                                                  "gen_ai.usage.input_tokens": i}) as span:
                span.add_event("token", {"n": i})
    return list(memory.get_finished_spans())


def _request(spans: list[Any]) -> bytes:
    """The protobuf body the SDK's OTLP exporters send for `spans`."""
    return encode_spans(spans).SerializeToString()


def _daemon(backend_url: str, *, forward_otlp: bool = True, **extra: Any) -> Daemon:
    exporter = {"type": "otlp_http", "endpoint": backend_url, "forward_otlp": forward_otlp,
                "batch": {"max_delay": "20ms"}, "retry": {"initial_interval": "50ms", "max_interval": "200ms"}}
    exporter.update(extra.pop("exporter", {}))
    config = {"state_dir": None, "receivers": {"otlp": {"type": "otlp_http", "endpoint": "127.0.0.1:0"}},
              "exporters": {"up": exporter}, "batch": {"max_delay": "20ms"}, **extra}
    daemon = Daemon(config)
    daemon.set_config(state_dir=str(daemon.state))
    return daemon


def _url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.status()['receivers']['otlp']['port']}/v1/traces"


def _post(url: str, body: bytes) -> ExportTraceServiceResponse:
    answer = httpx.post(url, content=body, headers=PROTOBUF, timeout=10)
    assert answer.status_code == 200, answer.text
    return ExportTraceServiceResponse.FromString(answer.content)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def backend() -> Iterator[OTLPServer]:
    with OTLPServer() as server:
        yield server


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.cleanup()


def test_sdk_requests_reach_the_backend_byte_for_byte(backend: OTLPServer, daemons: list[Daemon]) -> None:
    """What the OTel SDK's exporter sends is what the backend gets: same bytes, no conventions added, the
    sender's resource and scope; counted as forwarded and exported."""
    daemon = _daemon(backend.url).start()
    daemons.append(daemon)
    spans = _sdk_spans(3)
    exporter = OTLPSpanExporter(endpoint=_url(daemon))
    assert exporter.export(spans).name == "SUCCESS"
    exporter.shutdown()
    (got,) = backend.wait_for_requests(1)
    assert got.body == _request(spans)
    assert got.header("content-encoding") == "gzip"
    assert {s["name"] for s in got.spans} == {"request", "chat"}
    assert all(not any(k.startswith("llm.") for k in s["attributes"]) for s in got.spans)  # nothing added
    status = daemon.status()
    assert status["pipeline"]["forwarded"] == 3 and status["pipeline"]["received"] == 3
    assert "forwarded as received 3" in render(status, None, None)  # `shipper status` says so
    wait_for(lambda: daemon.status()["exporters"]["up"].get("exported") == 3)


def test_grpc_requests_are_forwarded_too(backend: OTLPServer, daemons: list[Daemon]) -> None:
    """The otlp_grpc receiver forwards as otlp_http does: the SDK's gRPC exporter's request reaches the
    OTLP/HTTP backend as the bytes it sent."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCExporter

    daemon = _daemon(backend.url)
    daemon.config["receivers"] = {"grpc": {"type": "otlp_grpc", "endpoint": "127.0.0.1:0"}}
    daemon.set_config().start()
    daemons.append(daemon)
    spans = _sdk_spans(2)
    exporter = GRPCExporter(endpoint=f"127.0.0.1:{daemon.status()['receivers']['grpc']['port']}", insecure=True)
    try:
        assert exporter.export(spans).name == "SUCCESS"
    finally:
        exporter.shutdown()
    (got,) = backend.wait_for_requests(1)
    assert got.body == _request(spans)
    assert daemon.status()["pipeline"]["forwarded"] == 2


def test_requests_queued_together_are_joined_into_one_body(backend: OTLPServer, daemons: list[Daemon]) -> None:
    """Two requests taken in one batch go in one POST whose body is the two joined: one valid request
    holding the spans of both."""
    daemon = _daemon(backend.url, exporter={"batch": {"max_delay": "5s", "max_spans": 5}}).start()
    daemons.append(daemon)
    first, second = _request(_sdk_spans(2)), _request(_sdk_spans(3))
    _post(_url(daemon), first)
    _post(_url(daemon), second)
    (got,) = backend.wait_for_requests(1)
    assert got.body == first + second
    joined = ExportTraceServiceRequest.FromString(got.body)
    assert [len(rs.scope_spans[0].spans) for rs in joined.resource_spans] == [2, 3]


def test_a_processor_turns_forwarding_off(backend: OTLPServer, daemons: list[Daemon]) -> None:
    """With a processor configured the spans must be seen as records: they are converted (conventions
    added, shipper's scope), and nothing is counted forwarded."""
    daemon = _daemon(backend.url, processors=[{"type": "redact"}]).start()
    daemons.append(daemon)
    _post(_url(daemon), _request(_sdk_spans(2)))
    spans = backend.wait_for_spans(2)
    chat = next(s for s in spans if s["name"] == "chat")
    assert chat["attributes"]["llm.model_name"] == "m1"  # OpenInference, added by the conversion
    assert daemon.status()["pipeline"].get("forwarded", 0) == 0


def test_an_exporter_that_does_not_forward_turns_it_off_for_all(backend: OTLPServer, daemons: list[Daemon]) -> None:
    """Forwarding needs every exporter to forward: with a file exporter beside, both get records."""
    daemon = _daemon(backend.url)
    daemon.config["exporters"]["file"] = {"type": "file", "batch": {"max_delay": "20ms"}}
    daemon.set_config().start()
    daemons.append(daemon)
    _post(_url(daemon), _request(_sdk_spans(2)))
    assert "llm.model_name" in next(s for s in backend.wait_for_spans(2) if s["name"] == "chat")["attributes"]
    wait_for(lambda: len(daemon.records()) == 2)
    assert daemon.status()["pipeline"].get("forwarded", 0) == 0


def test_a_bad_span_is_rejected_alone(backend: OTLPServer, daemons: list[Daemon]) -> None:
    """A request holding a span a backend would refuse is decoded as usual: that span is rejected (and
    said so in the answer), the others are delivered."""
    daemon = _daemon(backend.url).start()
    daemons.append(daemon)
    message = encode_spans(_sdk_spans(3))
    message.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)
    answer = _post(_url(daemon), message.SerializeToString())
    assert answer.partial_success.rejected_spans == 1
    assert len(backend.wait_for_spans(2)) == 2
    assert daemon.status()["pipeline"].get("forwarded", 0) == 0


def test_queued_requests_survive_kill_9_and_a_config_that_stops_forwarding(backend: OTLPServer,
                                                                           daemons: list[Daemon]) -> None:
    """Answered means durable: requests queued while the backend is down survive kill -9; restarted with
    forward_otlp off, the exporter decodes them from the queue and sends them converted."""
    daemon = _daemon(f"http://127.0.0.1:{_closed_port()}").start()
    daemons.append(daemon)
    spans = _sdk_spans(3)
    _post(_url(daemon), _request(spans))
    wait_for(lambda: daemon.status()["exporters"]["up"].get("queued") == 3)
    daemon.kill()
    daemon.config["exporters"]["up"].update(endpoint=backend.url, forward_otlp=False)
    daemon.set_config().start()
    got = backend.wait_for_spans(3)
    assert sorted(s["span_id"] for s in got) == sorted(format(s.context.span_id, "016x") for s in spans)
    assert "llm.model_name" in next(s for s in got if s["name"] == "chat")["attributes"]


def test_a_reload_that_stops_forwarding_sends_what_is_queued_converted(backend: OTLPServer,
                                                                        daemons: list[Daemon]) -> None:
    """SIGHUP with forward_otlp turned off and a live backend: the requests queued meanwhile go out as
    records, and new requests are converted from then on."""
    daemon = _daemon(f"http://127.0.0.1:{_closed_port()}").start()
    daemons.append(daemon)
    _post(_url(daemon), _request(_sdk_spans(2)))
    wait_for(lambda: daemon.status()["exporters"]["up"].get("queued") == 2)
    daemon.config["exporters"]["up"].update(endpoint=backend.url, forward_otlp=False)
    daemon.set_config()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.status()["pipeline"].get("reloads") == 1, timeout=20)
    _post(_url(daemon), _request(_sdk_spans(2)))
    got = backend.wait_for_spans(4)
    assert all("llm.model_name" in s["attributes"] for s in got if s["name"] == "chat")
    assert daemon.status()["pipeline"]["forwarded"] == 2  # the first request only


def test_a_refused_forwarded_batch_is_dead_lettered_as_records(daemons: list[Daemon]) -> None:
    """A backend's 400 dead-letters the batch as records (what `shipper replay` reads), with its body."""
    with OTLPServer(default=Reply.status(400, b"bad batch")) as refusing:
        daemon = _daemon(refusing.url).start()
        daemons.append(daemon)
        spans = _sdk_spans(2)
        _post(_url(daemon), _request(spans))
        path = daemon.state / "deadletter" / "up.ndjson"
        wait_for(lambda: path.exists() and path.read_bytes().endswith(b"\n"))
    (letter,) = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert letter["reason"] == "rejected_by_backend" and letter["count"] == 2
    assert "bad batch" in letter["error"]
    assert sorted(r["span_id"] for r in letter["records"]) == sorted(format(s.context.span_id, "016x") for s in spans)


def test_config_refuses_forwarding_with_json() -> None:
    """forward_otlp sends protobuf as it came: with encoding json it is a config error naming the key."""
    from shipper.errors import ConfigError
    from shipper.testing import build_exporter

    with pytest.raises(ConfigError, match=r"forward_otlp.*encoding: protobuf"):
        build_exporter("otlp_http", {"forward_otlp": True, "encoding": "json"})


# -- which requests may be forwarded ------------------------------------------------------------------


def _message(n: int = 3) -> ExportTraceServiceRequest:
    return encode_spans(_sdk_spans(n))


def _first_span(message: ExportTraceServiceRequest) -> Any:
    return message.resource_spans[0].scope_spans[0].spans[0]


def test_check_counts_the_spans_of_a_sound_request() -> None:
    assert forward.check(_message(3).SerializeToString(), 512) == 3
    assert forward.check(_message(3).SerializeToString(), 2) == 0  # more than one queue record holds


@pytest.mark.parametrize("breaks", [
    lambda s: setattr(s, "trace_id", bytes(16)),
    lambda s: setattr(s, "trace_id", b"\x01" * 15),
    lambda s: setattr(s, "span_id", bytes(8)),
    lambda s: setattr(s, "span_id", b"\x01" * 9),
    lambda s: setattr(s, "parent_span_id", b"\x01" * 4),
    lambda s: setattr(s, "parent_span_id", bytes(8)),
    lambda s: setattr(s, "name", ""),
    lambda s: setattr(s, "name", "n" * 1025),
    lambda s: setattr(s, "end_time_unix_nano", s.start_time_unix_nano - 1),
    lambda s: s.links.add(trace_id=b"\x01" * 3, span_id=b"\x01" * 8),
], ids=["zero trace", "short trace", "zero span", "long span", "short parent", "zero parent", "no name",
        "long name", "end before start", "bad link"])
def test_check_refuses_a_span_a_backend_would_refuse(breaks: Any) -> None:
    message = _message(3)
    breaks(_first_span(message))
    assert forward.check(message.SerializeToString(), 512) == 0


def test_check_refuses_text_that_is_not_utf8_and_what_is_not_a_request() -> None:
    """Invalid UTF-8 in an attribute (a string a backend's parser refuses), garbage, JSON, empty."""
    body = _message(2).SerializeToString()
    at = body.index(b"m1")
    assert forward.check(body[:at] + b"\xff\xfe" + body[at + 2:], 512) == 0
    assert forward.check(b"\x0a\x05abc", 512) == 0
    assert forward.check(b'{"resourceSpans": []}', 512) == 0
    assert forward.check(b"", 512) == 0


# -- the exporter's side --------------------------------------------------------------------------------


async def test_export_forwarded_joins_within_max_request_bytes_and_splits_a_413_by_span() -> None:
    """Requests go joined while the body fits `max_request_bytes`, else in parts; a single request the
    backend answers 413 for is sent again as its spans, converted (and split further on another 413)."""
    from shipper.testing import build_exporter

    requests = [(_request(_sdk_spans(3)), 3) for _ in range(4)]
    size = len(requests[0][0])
    with OTLPServer() as server:
        exporter, _, _ = build_exporter("otlp_http", {"endpoint": server.url, "forward_otlp": True,
                                                      "max_request_bytes": max(1024, size * 2 + 1)})
        try:
            await exporter.export_forwarded(requests, [])
            bodies = [r.body for r in server.wait_for_requests(2)]
            assert b"".join(bodies) == b"".join(body for body, _ in requests)
            assert len(bodies) == 2 and all(len(b) <= size * 2 for b in bodies)

            server.clear()
            server.script(Reply.status(413, b"too large"))
            one = _request(_sdk_spans(2))
            await exporter.export_forwarded([(one, 2)], [])
            refused, converted = server.wait_for_requests(2)
            assert refused.body == one
            assert sorted(s["name"] for s in converted.spans) == ["chat", "request"]
            assert "llm.model_name" in next(s for s in converted.spans if s["name"] == "chat")["attributes"]
        finally:
            await exporter.aclose()
