"""Receiver `otlp_http`: OTLP/HTTP traces (protobuf or JSON, gzip or not) from any OpenTelemetry SDK.

Point an unmodified app at it (`OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`), or the Langfuse SDK
(`LANGFUSE_HOST=http://127.0.0.1:4318`): both paths are served.

    POST /v1/traces                    OTLP/HTTP (the OpenTelemetry exporters' default path)
    POST /api/public/otel/v1/traces    the same, where Langfuse's SDK sends it
    Content-Type: application/x-protobuf | application/json;  Content-Encoding: gzip | identity

Each span becomes a record v1 through `shipper.receivers.otlp_intake` (shared with otlp_grpc; the mapping
is `shipper.otlp.decode`, which `shipper.otel` uses too) and goes down the same pipeline as the socket's
records. A span that is not a valid record (a zero or missing id, end before start, ...) is set aside as
malformed and reported back in the OTLP response's `partial_success` (`rejected_spans`,
`error_message`); the others are taken. Answers:
200 (an `ExportTraceServiceResponse` in the request's encoding), 400 (unreadable body or HTTP),
404 (other path), 405 (not POST), 413 (body, or its gzip-expanded form, over `max_body_bytes`),
415 (other content type or encoding), 500 (a fault of shipper's own, logged; the receiver serves on),
503 with `Retry-After` (the daemon's intake is full, or the records were not in every exporter's queue
within `timeout`: the SDK retries). Error bodies are a `google.rpc.Status` as OTLP asks.

Durable 200: a 200 is sent only once the request's records are in every exporter's durable queue (the
pipeline's `commit(mark)` of this request, as for a spool offset), so a `kill -9` right after a 200 loses
none of them; a request cut off before its answer is retried by the SDK (at least once, never lost).

Limits, so no local process can exhaust the daemon: `timeout` is a deadline for the whole request
(waiting for it on a kept-alive connection, its headers and its body), not per read; at most
`max_connections` connections are open: at the cap the oldest idle one (between requests) is closed,
else the oldest still sending its request, else the new one is refused (`connections_refused`); when
`accept()` fails (EMFILE/ENFILE: out of file descriptors) it is counted (`accept_errors`), the oldest idle
connection is closed and accept is retried after a backoff, never ending the receiver or the daemon.
A gRPC client at this port (its connection opens with the HTTP/2 preface) is answered in HTTP/2 with
a status naming the otlp_grpc port (`grpc_hint`).

The server is HTTP/1.1 with keep-alive, h11 on anyio TCP listeners, bound in `open()`; with port 0 the
port the system chose shows in the log line and in `statistics()["port"]`.
"""

from __future__ import annotations

import base64
import errno
import logging
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import anyio
import h11
import orjson
from anyio.abc import SocketAttribute, SocketStream
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from shipper.component import Context, Deliver, Intake
from shipper.errors import ConfigError
from shipper.otlp.decode import check_groups
from shipper.otlp.wire import varint
from shipper.receivers import grpc_hint
from shipper.receivers.otlp_intake import (
    decode_spans,
    export_response,
    grpc_endpoints,
    off_loop,
    read_body_off_loop,
)
from shipper.record import Record, Reject
from shipper.values import ByteSize, Duration

__all__ = ["OTLPHTTPReceiver", "parse_endpoint"]

log = logging.getLogger("shipper.receivers.otlp_http")

PATHS = ("/v1/traces", "/api/public/otel/v1/traces")
PROTOBUF, JSON = "application/x-protobuf", "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})
_ENDPOINT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")
_GRPC_CODE = {400: 3, 404: 5, 405: 12, 413: 8, 415: 3, 503: 14}
_HEX_IDS = ("traceId", "spanId", "parentSpanId")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as (host, port); raises ValueError when it is not one."""
    match = _ENDPOINT.fullmatch(endpoint.strip())
    if match is None or int(match["port"]) > 65535:
        raise ValueError(endpoint)
    return match["v6"] or match["host"], int(match["port"])


@dataclass(kw_only=True)
class Config:
    """Where to listen and how much one request may carry."""

    endpoint: str = "127.0.0.1:4318"
    max_body_bytes: ByteSize = field(default=16 * 1024 * 1024, metadata={"min": 1024})
    timeout: Duration = field(default=30.0, metadata={"min": 0.001})
    """Deadline of a whole request (idle wait, headers and body), and of its wait to be queued."""
    max_connections: int = field(default=256, metadata={"min": 1})
    """Open connections at most; at the cap the oldest idle one is closed first."""

    def check(self) -> list[str]:
        try:
            parse_endpoint(self.endpoint)
        except ValueError:
            return [f"endpoint: expected host:port like \"127.0.0.1:4318\" (port 0 picks a free one), "
                    f"got {self.endpoint!r}"]
        return []


class _GRPCClient(Exception):
    """A connection that opened with the HTTP/2 preface (a gRPC client at the wrong port), already answered."""

    def __init__(self, data: bytes) -> None:
        super().__init__("HTTP/2 preface")
        self.data = data


class _Refused(Exception):
    """A request answered with an HTTP error status."""

    def __init__(self, status: int, message: str, close: bool = False, json: bool = False,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.json = json
        self.retry_after = retry_after


RETRY_AFTER_S = 1
"""The `Retry-After` of a 503: how long an SDK should wait before sending the request again."""
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_CLIENT_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
                          errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH,
                          errno.EAGAIN, errno.EINTR, errno.ECONNRESET})


class _Conn:
    """One open connection: what it is doing, since when, and how to close it."""

    __slots__ = ("phase", "scope", "since")

    def __init__(self) -> None:
        self.phase = "idle"  # idle (between requests) | reading | handling
        self.since = time.monotonic()
        self.scope: anyio.CancelScope | None = None


def _status_body(code: int, message: str, json: bool) -> bytes:
    """A `google.rpc.Status` {code, message}, hand-encoded (two fields) to avoid another dependency."""
    if json:
        return orjson.dumps({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text


def _hex_to_base64(item: dict[str, Any]) -> None:
    for key in _HEX_IDS:
        value = item.get(key)
        if isinstance(value, str) and len(value) in (16, 32):
            try:
                item[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:  # not hex: leave it for protobuf's JSON parser (base64)
                pass


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON body (ids in hex, as OTLP specifies) as an ExportTraceServiceRequest."""
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the body is not a JSON object")
    for rs in data.get("resourceSpans") or data.get("resource_spans") or ():
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or ():
            for span in ss.get("spans") or ():
                _hex_to_base64(span)
                for link in span.get("links") or ():
                    _hex_to_base64(link)
    return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)


class OTLPHTTPReceiver:
    """OTLP/HTTP traces endpoint; one task per connection."""

    Config = Config
    answers_senders = True  # committed once queued or held by a tail sampler (shipper.component)

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.counters = ctx.counters
        self.host, self.port = parse_endpoint(config.endpoint)
        self._listener: Any = None
        self._conns: dict[int, _Conn] = {}
        self._accept_logged = 0.0

    @property
    def _connections(self) -> int:
        return len(self._conns)

    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status`: where it listens (the bound port) and open connections."""
        return {"endpoint": f"{self.host}:{self.port}", "port": self.port, "open_connections": len(self._conns),
                "max_connections": self.config.max_connections}

    async def open(self) -> None:
        """Bind and listen; with port 0 the system picks the port, which `statistics()` then reports."""
        if self._listener is not None:
            return
        try:
            self._listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        except OSError as exc:
            raise ConfigError([f"receivers.{self.ctx.name}.endpoint: cannot listen on {self.config.endpoint}: "
                               f"{exc.strerror or exc}; is another process using the port?"]) from exc
        self.port = self._listener.extra(SocketAttribute.local_port)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        log.info("Listening for OTLP/HTTP on http://%s:%d%s (and %s).", shown, self.port, PATHS[0], PATHS[1])

    async def run(self, deliver: Deliver) -> None:
        """Serve connections until cancelled."""
        assert self._listener is not None, "open() first"
        async with anyio.create_task_group() as tg:
            for listener in getattr(self._listener, "listeners", [self._listener]):
                tg.start_soon(self._accept, listener, deliver, tg)

    async def _accept(self, listener: Any, deliver: Deliver, tg: Any) -> None:
        """Accept connections until cancelled; running out of descriptors backs off, never ends it."""
        wait = 0.05
        while True:
            try:
                stream = await listener.accept()
            except (OSError, anyio.BrokenResourceError) as caught:
                exc = caught if isinstance(caught, OSError) else caught.__cause__
                if not isinstance(exc, OSError):
                    raise
                if exc.errno in _CLIENT_GONE:  # that one client is gone; accept the next
                    await anyio.sleep(0)
                    continue
                if exc.errno not in _ACCEPT_ERRNOS:
                    raise  # the listener itself is broken: the pipeline logs it and restarts the receiver
                self.counters.add("accept_errors")
                self.counters.last_error = f"accept: {exc.strerror or exc}"
                now = time.monotonic()
                if now - self._accept_logged > 60:
                    self._accept_logged = now
                    log.error("Cannot accept OTLP connections on %s:%d: %s (%d open). Closing the oldest idle "
                              "one and retrying; raise LimitNOFILE or lower max_connections.", self.host,
                              self.port, exc.strerror or exc, len(self._conns))
                self._evict(idle_only=True)
                await anyio.sleep(wait)
                wait = min(wait * 2, 1.0)
                continue
            wait = 0.05
            if len(self._conns) >= self.config.max_connections and not self._evict(idle_only=False):
                self.counters.add("connections_refused")
                await stream.aclose()
                continue
            state = _Conn()
            self._conns[id(state)] = state
            self.counters.add("connections")
            tg.start_soon(self._serve, stream, deliver, state)

    def _evict(self, idle_only: bool) -> bool:
        """Close the oldest idle connection (else, unless `idle_only`, the oldest still reading)."""
        for phases in (("idle",), ("reading",)):
            victims = [c for c in self._conns.values() if c.phase in phases and c.scope is not None]
            if victims:
                victim = min(victims, key=lambda c: c.since)
                assert victim.scope is not None
                victim.scope.cancel()
                self._conns.pop(id(victim), None)
                self.counters.add("closed_idle" if phases == ("idle",) else "closed_reading")
                return True
            if idle_only:
                break
        return False

    async def commit(self, mark: Any) -> None:
        """The request's records are in every exporter's queue: its 200 may go out."""
        if isinstance(mark, anyio.Event):
            mark.set()

    async def aclose(self) -> None:
        """Stop listening. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()

    # -- one connection ------------------------------------------------------------------------------

    async def _serve(self, stream: SocketStream, deliver: Deliver, state: _Conn) -> None:
        with anyio.CancelScope() as state.scope:
            try:
                await self._serve_conn(stream, deliver, state)
            finally:
                self._conns.pop(id(state), None)
                with anyio.CancelScope(shield=True):
                    await stream.aclose()

    async def _serve_conn(self, stream: SocketStream, deliver: Deliver, state: _Conn) -> None:
        try:
            peer = stream.extra(SocketAttribute.remote_address, None)
        except Exception:
            peer = None
        source = f"{self.ctx.name} {peer[0]}:{peer[1]}" if isinstance(peer, tuple) else self.ctx.name
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        timeout = self.config.timeout
        try:
            async with stream:
                while True:
                    retry_after: int | None = None
                    try:
                        try:
                            with anyio.fail_after(timeout):  # the whole request, not each read
                                got = await self._read_request(conn, stream, state)
                        except TimeoutError:
                            if state.phase == "reading":
                                self.counters.add("request_timeouts")
                            return
                        if got is None:
                            return
                        request, body = got
                        state.phase = "handling"
                        status, content_type, payload = await self._handle(request, body, source, deliver)
                        close = False
                    except _Refused as refused:
                        self.counters.add("refused_requests")
                        self.counters.last_error = f"{refused.status}: {refused.message}"
                        status, content_type = refused.status, JSON if refused.json else PROTOBUF
                        payload = _status_body(_GRPC_CODE.get(refused.status, 2), refused.message, refused.json)
                        close = refused.close
                        retry_after = refused.retry_after
                    except _GRPCClient:
                        raise
                    except Exception as exc:  # a bug of ours: answer 500, keep the receiver serving others
                        log.exception("Failed to handle an OTLP request from %s; answered 500.", source)
                        self.counters.last_error = f"500: {type(exc).__name__}: {exc}"[:500]
                        status, content_type, close = 500, PROTOBUF, True
                        payload = _status_body(13, "internal error in shipper's otlp_http receiver", False)
                    with anyio.fail_after(timeout):
                        if not await self._respond(conn, stream, status, content_type, payload, close,
                                                   retry_after):
                            return
                    state.phase, state.since = "idle", time.monotonic()
        except _GRPCClient:  # answered in its own protocol by _receive; nothing more to say
            return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, TimeoutError,
                h11.LocalProtocolError, OSError):
            return

    async def _receive(self, conn: h11.Connection, stream: SocketStream, state: _Conn | None = None) -> Any:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Refused(exc.error_status_hint, f"malformed HTTP request: {exc}", close=True) from exc
            if event is not h11.NEED_DATA:
                return event
            if conn.they_are_waiting_for_100_continue:
                await stream.send(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                data = await stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
            if state is not None and state.phase == "idle":
                state.phase, state.since = "reading", time.monotonic()
            if conn.their_state is h11.IDLE and not conn.trailing_data[0] and grpc_hint.looks_like_http2(data):
                await self._answer_grpc(stream, data)
                raise _GRPCClient(data)
            conn.receive_data(data)

    async def _answer_grpc(self, stream: SocketStream, data: bytes) -> None:
        """Tell a gRPC client (HTTP/2) in its own protocol that OTLP/gRPC is served on another port."""
        self.counters.add("refused_requests")
        where = (f"on {', '.join(grpc_endpoints)} (the otlp_grpc receiver)" if grpc_endpoints else
                 "by the otlp_grpc receiver (127.0.0.1:4317 by default; enable it in the config)")
        message = (f"this port ({self.port}) is shipper's OTLP/HTTP receiver; OTLP/gRPC is served {where}, "
                   f"or export over OTLP/HTTP to http://{self.host}:{self.port}{PATHS[0]}")
        self.counters.last_error = "a gRPC client connected to the OTLP/HTTP port"
        log.warning("A gRPC client connected to the OTLP/HTTP port %d; told it: %s", self.port, message)
        with anyio.move_on_after(self.config.timeout):
            await stream.send(grpc_hint.greeting())
            while (stream_id := grpc_hint.first_stream(data)) is None and len(data) < grpc_hint.MAX_READ:
                data += await stream.receive(65536)
            if stream_id is not None:
                await stream.send(grpc_hint.answer(stream_id, message))

    async def _read_request(self, conn: h11.Connection, stream: SocketStream,
                            state: _Conn | None = None) -> tuple[h11.Request, bytes] | None:
        event = await self._receive(conn, stream, state)
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        request = event
        limit = self.config.max_body_bytes
        json = _content_type(request) == JSON
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _Refused(413, f"the body of {int(value)} bytes is over max_body_bytes ({limit}); send "
                                    "smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE) or raise the limit",
                               close=True, json=json)
        budget = self.ctx.intake
        full = budget is not None and budget.full()
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._receive(conn, stream, state)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _Refused(413, f"the body is over max_body_bytes ({limit}); send smaller batches",
                                   close=True, json=json)
                if not full:  # a request refused for a full intake is read to its end, not kept
                    chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                if full:
                    self.counters.add("intake_full")
                    raise _Refused(503, "the daemon's intake is full; retry after the Retry-After delay",
                                   json=json, retry_after=RETRY_AFTER_S)
                return request, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _respond(self, conn: h11.Connection, stream: SocketStream, status: int, content_type: str,
                       payload: bytes, close: bool, retry_after: int | None = None) -> bool:
        """Send the answer; False when the connection is to be closed afterwards."""
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(payload)).encode())]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        if close:
            headers.append((b"connection", b"close"))
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        await stream.send(conn.send(h11.Response(status_code=status, headers=headers)))
        await stream.send(conn.send(h11.Data(data=payload)))
        await stream.send(conn.send(h11.EndOfMessage()))
        if close or conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        return True

    # -- one request ---------------------------------------------------------------------------------

    async def _handle(self, request: h11.Request, body: bytes, source: str,
                      deliver: Deliver) -> tuple[int, str, bytes]:
        path = request.target.split(b"?", 1)[0].rstrip(b"/").decode("latin-1")
        if path not in PATHS:
            raise _Refused(404, f"no such path {path!r}; OTLP traces go to {PATHS[0]} or {PATHS[1]}",
                           json=_content_type(request) == JSON)
        if request.method != b"POST":
            raise _Refused(405, f"{request.method.decode('latin-1')} is not allowed here; OTLP export is a POST",
                           json=_content_type(request) == JSON)
        content_type = _content_type(request)
        if content_type not in _PROTOBUF_TYPES and content_type != JSON:
            raise _Refused(415, f"content type {content_type or 'none'!r} is not supported; send "
                                f"{PROTOBUF} or {JSON}")
        is_json = content_type == JSON
        encoding = _header(request, b"content-encoding") or "identity"
        if encoding == "gzip":
            body = self._gunzip(body, is_json)
        elif encoding != "identity":
            raise _Refused(415, f"content encoding {encoding!r} is not supported; send gzip or identity",
                           json=is_json)
        if is_json:
            records, rejects = await off_loop(len(body), self.counters, _read_json, body, self.ctx.max_record_bytes)
            forwarded = 0
        else:
            try:  # parsed and decoded in one: DecodeError comes from the parsing only
                records, rejects, forwarded = await read_body_off_loop(body, self.ctx, self.counters)
            except DecodeError as exc:
                raise _Refused(400, f"the body is not a readable OTLP protobuf ExportTraceServiceRequest: "
                                    f"{str(exc)[:200]}") from exc
        self.counters.add("requests")
        if records or forwarded:
            self.counters.add("received", len(records) + forwarded)
        if records or rejects or forwarded:
            mark = anyio.Event()
            with anyio.move_on_after(self.config.timeout):
                await deliver(Intake(records, rejects, mark, source, len(body), body if forwarded else b"",
                                     forwarded))
                await mark.wait()
            if not mark.is_set():
                self.counters.add("not_queued_in_time")
                raise _Refused(503, f"the records were not in every exporter's queue within {self.config.timeout:g}s; "
                                    "retry after the Retry-After delay", json=is_json, retry_after=RETRY_AFTER_S)
        response = export_response(rejects)
        payload = json_format.MessageToJson(response, indent=None).encode() if is_json else response.SerializeToString()
        return 200, JSON if is_json else PROTOBUF, payload

    def _gunzip(self, body: bytes, json: bool) -> bytes:
        limit = self.config.max_body_bytes
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _Refused(400, f"the gzip body cannot be decompressed: {exc}", json=json) from exc
        if len(out) > limit:
            raise _Refused(413, f"the body expands to more than max_body_bytes ({limit}) once decompressed; "
                                "send smaller batches", json=json)
        if not inflater.eof:
            raise _Refused(400, "the gzip body is truncated", json=json)
        return out


def _read_json(body: bytes, max_record_bytes: int) -> tuple[list[Record], list[Reject]]:
    """The records and rejects of an OTLP/JSON body; `_Refused` (400) when it is not a request."""
    try:
        message = parse_json(body)
        check_groups(message)
    except (ValueError, DecodeError, json_format.ParseError, orjson.JSONDecodeError) as exc:
        raise _Refused(400, f"the body is not a readable OTLP/JSON ExportTraceServiceRequest: "
                            f"{str(exc)[:200]}", json=True) from exc
    return decode_spans(message, max_record_bytes)


def _header(request: h11.Request, name: bytes) -> str:
    """A request header's value, lower case ("" when absent); h11 gives names lower-cased."""
    return next((v.decode("latin-1").strip().lower() for k, v in request.headers if k == name), "")


def _content_type(request: h11.Request) -> str:
    return _header(request, b"content-type").split(";", 1)[0].strip()
