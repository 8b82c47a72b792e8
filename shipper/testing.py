"""Test helpers, shipped (like `structlog.testing`): polling (`wait_until`, `await_until`), records
(`make_span`), components built as the daemon builds them (`build_processor`, `build_exporter`), and a
real OTLP/HTTP server that records requests and follows a script. The client's own helpers (a recording
socket server, standard library only) are in `shipper.client.testing`.

`OTLPServer` listens on 127.0.0.1, port 0 (the OS picks), in a background thread. Every POST is read,
un-gzipped, decoded as an OTLP `ExportTraceServiceRequest` (protobuf, or JSON when the content type says
so) with opentelemetry-proto, recorded as a `Request`, and answered with the next `Reply` of its script
(200 with an empty `ExportTraceServiceResponse` once the script is used up):

    with OTLPServer() as server:
        server.script(Reply.status(503), Reply.status(503), Reply.ok())
        ...                                   # export to server.url + "/v1/traces"
        server.wait_for_spans(5)
        span = server.spans()[0]              # {"name": ..., "attributes": {...}, "resource": {...}}

Replies: `ok()`, `status(code, body=, headers=)`, `retry_after(value, code=429)`, `partial(rejected, message)`
(an OTLP partial success), `hang(seconds)` (answer nothing until then or until the server stops),
`reset()` (read the request, then reset the TCP connection). `server.default` is what every unscripted
request gets: set it to `Reply.status(503)` for an outage of any length, back to `Reply.ok()` to end it.
Requests are recorded even when the reply is a failure, so a test can count attempts.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import os
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = [
    "OTLPServer",
    "Reply",
    "Request",
    "await_until",
    "build_exporter",
    "build_processor",
    "decode_request",
    "flatten_value",
    "make_span",
    "read_ndjson",
    "send_seqpacket",
    "short_dir",
    "spans_of",
    "wait_until",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.01, what: str = "condition") -> Any:
    """Poll `predicate()` until it returns something truthy, which is returned; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        time.sleep(interval)


async def await_until(predicate: Any, timeout: float = 10.0, interval: float = 0.01, what: str = "condition") -> Any:
    """`wait_until` for code on the event loop: poll with `anyio.sleep`, so the loop keeps running."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        await anyio.sleep(interval)


def short_dir(prefix: str = "shp") -> str:
    """A fresh directory under /tmp, short enough for Unix socket paths."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def send_seqpacket(path: str, messages: list[bytes]) -> None:
    """Connect to a SOCK_SEQPACKET socket and send each message as one packet."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
        for message in messages:
            sock.send(message)
    finally:
        sock.close()


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an NDJSON file (and of its rotated siblings), oldest first."""
    out: list[dict[str, Any]] = []
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    for file in [*files, path]:
        if not file.exists():
            continue
        data = file.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].split(b"\n"):  # a line still being written waits
            if line.strip():
                out.append(orjson.loads(line))
    return out


def build_processor(type_name: str, settings: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """A processor of `type_name` built from YAML-like `settings` as the daemon builds it, and its counters."""
    from shipper import registry
    from shipper.component import Context
    from shipper.config import build_dataclass
    from shipper.errors import ConfigError
    from shipper.stats import Counters

    cls = registry.load("processors", type_name)
    problems: list[str] = []
    config = build_dataclass(cls.Config, settings or {}, "", problems)
    if problems:
        raise ConfigError(problems)
    counters = Counters()
    return cls(config, Context(name=type_name, state_dir=Path("/nonexistent"), counters=counters)), counters


def make_span(trace: int = 1, span: int = 1, parent: int | None = None, **fields: Any) -> dict[str, Any]:
    """A valid record v1 with ids derived from small integers; `fields` override or add keys."""
    record: dict[str, Any] = {
        "v": 1, "trace_id": f"{trace:032x}", "span_id": f"{span:016x}", "name": "step",
        "start_ns": 1_763_683_200_000_000_000, "end_ns": 1_763_683_200_100_000_000,
    }
    if parent is not None:
        record["parent_id"] = f"{parent:016x}"
    record.update(fields)
    return record




def build_exporter(type_name: str, settings: dict[str, Any], state_dir: str | os.PathLike[str] | None = None,
                   name: str | None = None) -> tuple[Any, Any, Any]:
    """An exporter of `type_name` from YAML-like `settings` as the daemon builds it: (exporter, its
    delivery settings, its Context). `state_dir` defaults to a fresh directory under /tmp."""
    from shipper import registry
    from shipper.component import Context
    from shipper.config import build_exporter_config
    from shipper.errors import ConfigError
    from shipper.stats import Counters

    cls = registry.load("exporters", type_name)
    problems: list[str] = []
    config, delivery = build_exporter_config(cls.Config, settings, f"exporters.{name or type_name}", problems)
    if problems:
        raise ConfigError(problems)
    ctx = Context(name=name or type_name, state_dir=Path(state_dir or short_dir()), counters=Counters())
    return cls(config, ctx), delivery, ctx


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the server."""

    code: int = 200
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    abort: bool = False
    rejected: int = 0
    message: str = ""

    @classmethod
    def ok(cls) -> Reply:
        """200 with an empty ExportTraceServiceResponse."""
        return cls()

    @classmethod
    def status(cls, code: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> Reply:
        """Any status with a body (text or bytes) and extra headers."""
        data = body.encode() if isinstance(body, str) else body
        return cls(code=code, body=data, headers=tuple((headers or {}).items()))

    @classmethod
    def retry_after(cls, value: str | int | float, code: int = 429) -> Reply:
        """`code` (429 by default) with a `Retry-After` header (seconds or an HTTP date)."""
        return cls(code=code, body=b"slow down", headers=(("Retry-After", str(value)),))

    @classmethod
    def partial(cls, rejected: int, message: str = "some spans were rejected") -> Reply:
        """200 carrying an OTLP partial success: `rejected` spans refused, with `message`."""
        return cls(rejected=rejected, message=message)

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Reply:
        """Answer nothing for `seconds` (or until the server stops), then 200."""
        return cls(delay=seconds)

    @classmethod
    def reset(cls) -> Reply:
        """Read the request, then reset the TCP connection without answering."""
        return cls(abort=True)


@dataclass
class Request:
    """One request the server received, decoded."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    content_type: str
    peer: tuple[str, int]
    spans: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """A request header, by case-insensitive name."""
        return self.headers.get(name.lower(), default)


def flatten_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value (lists and dicts for arrays and key-value lists)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [flatten_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: flatten_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: flatten_value(kv.value) for kv in items}


def _hex(data: bytes) -> str | None:
    return data.hex() if data else None


_KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}


def _json_ids_to_base64(payload: Any) -> Any:
    """OTLP/JSON writes ids as hex; protobuf's JSON parser wants base64. Convert in place."""
    for rs in payload.get("resourceSpans", []) or []:
        for ss in rs.get("scopeSpans", []) or []:
            for span in ss.get("spans", []) or []:
                items = [span, *(span.get("links", []) or [])]
                for item in items:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if item.get(key):
                            item[key] = base64.b64encode(bytes.fromhex(item[key])).decode()
    return payload


def decode_request(body: bytes, content_type: str = PROTOBUF) -> ExportTraceServiceRequest:
    """Parse an OTLP trace export body (protobuf, or OTLP/JSON with hex ids)."""
    message = ExportTraceServiceRequest()
    if content_type.split(";", maxsplit=1)[0].strip() == JSON:
        json_format.ParseDict(_json_ids_to_base64(orjson.loads(body)), message, ignore_unknown_fields=True)
    else:
        message.ParseFromString(body)
    return message


def spans_of(message: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spans of an export request as dicts with attributes flattened, and its resources."""
    spans: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    for rs in message.resource_spans:
        resource = _attributes(rs.resource.attributes)
        resources.append(resource)
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append({
                    "trace_id": _hex(s.trace_id),
                    "span_id": _hex(s.span_id),
                    "parent_id": _hex(s.parent_span_id),
                    "name": s.name,
                    "kind": _KIND_NAMES.get(s.kind, str(s.kind)),
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                    "status": _STATUS_NAMES.get(s.status.code, str(s.status.code)),
                    "status_message": s.status.message,
                    "attributes": _attributes(s.attributes),
                    "events": [{"name": e.name, "time_ns": e.time_unix_nano, "attributes": _attributes(e.attributes)}
                               for e in s.events],
                    "links": [{"trace_id": _hex(lk.trace_id), "span_id": _hex(lk.span_id),
                               "attributes": _attributes(lk.attributes)} for lk in s.links],
                    "resource": resource,
                    "scope": ss.scope.name,
                })
    return spans, resources


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(200, b"ok", "text/plain", ())

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        content_type = headers.get("content-type", "")
        request = Request(method="POST", path=self.path, headers=headers, body=raw,
                          content_type=content_type, peer=self.client_address)
        try:
            encoding = headers.get("content-encoding", "").lower()
            body = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw) if encoding == "deflate" else raw
            request.body = body
            request.spans, request.resources = spans_of(decode_request(body, content_type))
        except Exception as exc:  # a bad body is recorded, and answered with the scripted reply anyway
            request.error = f"{type(exc).__name__}: {exc}"
        reply = owner._record(request)
        if reply.abort:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if reply.delay:
            owner._stopping.wait(reply.delay)
            if owner._stopping.is_set():
                self.close_connection = True
                return
        json_reply = content_type.split(";")[0].strip() == JSON
        if reply.body is not None:
            body, ctype = reply.body, "text/plain"
        else:
            response = ExportTraceServiceResponse()
            if reply.rejected:
                response.partial_success.rejected_spans = reply.rejected
                response.partial_success.error_message = reply.message
            if json_reply:
                body, ctype = json_format.MessageToJson(response).encode(), JSON
            else:
                body, ctype = response.SerializeToString(), PROTOBUF
        self._answer(reply.code, body, ctype, reply.headers)

    def _answer(self, code: int, body: bytes, ctype: str, headers: tuple[tuple[str, str], ...]) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: OTLPServer


class OTLPServer:
    """A real OTLP/HTTP server on 127.0.0.1 that records requests and answers from a script."""

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self._lock = threading.Condition()
        self._script: deque[Reply] = deque(replies)
        self.default = default or Reply.ok()
        self.requests: list[Request] = []
        self._stopping = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the OS gave the server."""
        assert self._server is not None, "start() the server first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, no trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OTLPServer:
        """Bind and serve in a background thread."""
        if self._server is None:
            self._server = _HTTPServer(("127.0.0.1", 0), _Handler)
            self._server.owner = self
            self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-test-server",
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Wake hanging handlers, stop serving and close the socket. Idempotent."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OTLPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *replies: Reply) -> None:
        """Append replies to the script; requests take them in order, then get `default`."""
        with self._lock:
            self._script.extend(replies)

    def _record(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self._script.popleft() if self._script else self.default
            self._lock.notify_all()
            return reply

    def clear(self) -> None:
        """Forget recorded requests and the rest of the script."""
        with self._lock:
            self.requests.clear()
            self._script.clear()

    def spans(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every decoded span received so far (of requests to `path` when given), in arrival order."""
        with self._lock:
            return [s for r in self.requests if path is None or r.path == path for s in r.spans]

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        """Block until at least `n` requests arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {n} requests within {timeout} s, got {len(self.requests)}")
                self._lock.wait(left)
            return list(self.requests)

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least `n` spans arrived (counting repeats); return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                spans = [s for r in self.requests for s in r.spans]
                if len(spans) >= n:
                    return spans
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {n} spans within {timeout} s, got {len(spans)}")
                self._lock.wait(left)
