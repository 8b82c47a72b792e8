"""A lean OTLP/HTTP sink in its own process: counts spans and notes each one's arrival minus its `end_ns`.

`python -m benchmarks.sink [--port P]` prints `listening <port>` once bound, then serves until killed:
- `POST <any path>`: an OTLP `ExportTraceServiceRequest` (protobuf, gzip or not), answered 200 with an
  empty response; a body that does not decode is answered 400 and counted as an error;
- `GET /stats`: `{"spans", "requests", "bytes", "errors"}`; `GET /latencies`: the list of
  arrival_ns - end_ns of every span so far; `GET /reset`: forget everything.

Unlike `shipper.testing.OTLPServer`, it keeps no decoded spans: the benchmark measures the daemon, and
a sink that turned every span into dicts would be the bottleneck on a small machine.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import sys
import threading
import time
import zlib
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_OK = ExportTraceServiceResponse().SerializeToString()


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.spans = self.requests = self.bytes = self.errors = 0
        self.latencies: list[int] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        state = self.state
        with state.lock:
            if self.path.startswith("/latencies"):
                body = orjson.dumps(state.latencies)
            else:
                if self.path.startswith("/reset"):
                    state.reset()
                body = orjson.dumps({"spans": state.spans, "requests": state.requests, "bytes": state.bytes,
                                     "errors": state.errors})
        self._answer(200, body, "application/json")

    def do_POST(self) -> None:
        arrival = time.time_ns()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            body = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw) if encoding == "deflate" else raw
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            ends = [s.end_time_unix_nano for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
        except Exception:
            with self.state.lock:
                self.state.errors += 1
            self._answer(400, b"cannot decode the body as an OTLP ExportTraceServiceRequest", "text/plain")
            return
        with self.state.lock:
            self.state.requests += 1
            self.state.bytes += len(raw)
            self.state.spans += len(ends)
            self.state.latencies.extend(arrival - end for end in ends)
        self._answer(200, _OK, "application/x-protobuf")

    def _answer(self, code: int, body: bytes, ctype: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    _Handler.state = _State()
    server = _Server(("127.0.0.1", args.port), _Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
