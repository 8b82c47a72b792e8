"""How long one big OTLP request holds the daemon's event loop: `python -m benchmarks.loop_stall [--spans N]`.

A request of N tiny spans (300,000: 15 MiB, just under otlp_http's `max_body_bytes`) is posted to the
otlp_http receiver of a pinned daemon exporting to a file, while this process asks the control socket
for `status` over and over. Reported per round: the longest status round trip while the request was
taken, the longest while the daemon was idle for as many round trips (the baseline, same run), and how
long the request took to be answered. Such a request is read in a worker thread (`THREAD_BODY_BYTES`)
and its records queued in slices (`pipeline.SLICE_SPANS`), so the loop goes on answering meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.processes import Daemon, free_port


def tiny_request(spans: int) -> bytes:
    """An ExportTraceServiceRequest of `spans` spans with ids, a name and times only."""
    message = ExportTraceServiceRequest()
    scope = message.resource_spans.add().scope_spans.add()
    trace_id = (7).to_bytes(16, "big")
    for i in range(spans):
        span = scope.spans.add()
        span.trace_id = trace_id
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = "op"
        span.start_time_unix_nano = 1_000
        span.end_time_unix_nano = 2_000
    return message.SerializeToString()


def _worst_round_trip(daemon: Daemon, until: threading.Event | None, count: int = 0) -> tuple[float, int]:
    """(longest status round trip in seconds, how many were asked): until `until` is set, or `count` of them."""
    worst, asked = 0.0, 0
    while (until is not None and not until.is_set()) or (until is None and asked < count):
        start = time.perf_counter()
        daemon.status()
        worst = max(worst, time.perf_counter() - start)
        asked += 1
    return worst, asked


def one_round(body: bytes, spans: int) -> dict[str, Any]:
    """One daemon: the loop's longest answer while idle, then while `body` is taken."""
    port = free_port()
    daemon = Daemon({"file": {"type": "file"}},
                    receivers={"otlp": {"type": "otlp_http", "endpoint": f"127.0.0.1:{port}"}}).start()
    try:
        answered = threading.Event()
        result: dict[str, Any] = {}

        def post() -> None:
            started = time.perf_counter()
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/traces", content=body,
                                headers={"content-type": "application/x-protobuf"}, timeout=300)
            result["status"] = answer.status_code
            result["request_s"] = time.perf_counter() - started
            answered.set()

        sender = threading.Thread(target=post)
        sender.start()
        busy, asked = _worst_round_trip(daemon, answered)
        sender.join()
        idle, _ = _worst_round_trip(daemon, None, max(asked, 20))
        received = int(daemon.status()["receivers"]["otlp"].get("received", 0))
        if result.get("status") != 200 or received != spans:
            raise RuntimeError(f"the request was answered {result.get('status')} with {received} of {spans} taken")
        return {"busy_ms": busy * 1000, "idle_ms": idle * 1000, "request_s": result["request_s"]}
    finally:
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_stall", description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    body = tiny_request(args.spans)
    rounds = [one_round(body, args.spans) for _ in range(args.rounds)]
    for key, label in (("busy_ms", "longest status answer, request in flight (ms)"),
                       ("idle_ms", "longest status answer, idle (ms)"),
                       ("request_s", "request answered after (s)")):
        figures = [r[key] for r in rounds]
        print(f"{label:48s} median {statistics.median(figures):8.2f}  rounds {[round(f, 2) for f in figures]}")
    print(f"{args.spans} spans, {len(body) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
