"""OTLP/HTTP load: `python -m benchmarks.otlp_load --url URL --n N [--batch B]`.

Encodes N benchmark LLM spans (the OpenTelemetry SDK's attributes for the benchmark call: 12 attributes,
about 780 bytes each) into `ExportTraceServiceRequest`s of B spans (the SDK's default batch, 512),
protobuf, uncompressed (the SDK exporter's default); prints `ready`, waits for a line on stdin, POSTs them
one after the other on one keep-alive connection (each waits for its answer, as the SDK's exporter does),
and prints `done <requests> <bytes sent>`. A non-2xx answer ends the run with exit status 1.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import time
import urllib.parse

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from benchmarks.workload import NAME, OTEL_REQUEST, OTEL_RESULT, OUTPUT

ATTRIBUTES = {**OTEL_REQUEST, **OTEL_RESULT, "output.value": OUTPUT, "openinference.span.kind": "LLM"}
assert len(ATTRIBUTES) == 12


def _set(target: object, value: object) -> None:
    if isinstance(value, bool):
        target.bool_value = value  # type: ignore[attr-defined]
    elif isinstance(value, int):
        target.int_value = value  # type: ignore[attr-defined]
    elif isinstance(value, float):
        target.double_value = value  # type: ignore[attr-defined]
    else:
        target.string_value = str(value)  # type: ignore[attr-defined]


def requests(n: int, batch: int, rng: random.Random) -> list[bytes]:
    """n spans as serialized export requests of up to `batch` spans each."""
    out: list[bytes] = []
    now = time.time_ns()
    for first in range(0, n, batch):
        message = ExportTraceServiceRequest()
        rs = message.resource_spans.add()
        for key, value in (("service.name", "bench"), ("telemetry.sdk.language", "python")):
            rs.resource.attributes.add(key=key).value.string_value = value
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        for _ in range(min(batch, n - first)):
            span = ss.spans.add()
            span.trace_id = rng.getrandbits(128).to_bytes(16, "big") or b"\x01" * 16
            span.span_id = rng.getrandbits(64).to_bytes(8, "big") or b"\x01" * 8
            span.name = NAME
            span.kind = PbSpan.SPAN_KIND_CLIENT
            span.start_time_unix_nano = now - 1_000_000
            span.end_time_unix_nano = now
            for key, value in ATTRIBUTES.items():
                _set(span.attributes.add(key=key).value, value)
            span.status.code = 1
        out.append(message.SerializeToString())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_load")
    parser.add_argument("--url", required=True, help="the receiver's /v1/traces URL")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    bodies = requests(args.n, args.batch, random.Random())
    print("ready", flush=True)
    sys.stdin.readline()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf"}
    sent = 0
    for body in bodies:
        conn.request("POST", url.path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        if not 200 <= answer.status < 300:
            print(f"failed HTTP {answer.status}", flush=True)
            return 1
        sent += len(body)
    conn.close()
    print(f"done {len(bodies)} {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
