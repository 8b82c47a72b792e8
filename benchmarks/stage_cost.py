"""CPU per span of each stage of the daemon's socket paths, in-process: `python -m benchmarks.stage_cost`.

What `benchmarks run --parts daemon` measures whole, taken apart on the benchmark's LLM span
(`benchmarks.workload.sample_record`), best of `--repeat` runs over `--n` spans taken a batch of 2048
at a time (each batch's output let go before the next, as in the daemon: a stage run over every span at
once holding all its output pays the garbage collector's visits to it too), in us of CPU per span.
Each stage is what the daemon runs for it (`decode_payload`, the default `redact` and `truncate`,
`orjson.dumps` of the queue line, the `body` of the otlp_http, phoenix and langfuse exporters on their
defaults, gzip level 1), beside the library calls it cannot do without (`recv_into` of one datagram,
`orjson.loads`), so the part a compiled piece could take is plain: the budget of a target
(1e6 / spans per CPU-second) against the sum of the stages its path runs. The asyncio scheduling,
batching and queue bookkeeping between the stages come on top (the daemon part's figure minus this sum).
"""

from __future__ import annotations

import argparse
import gzip
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.workload import sample_record
from shipper.component import Context
from shipper.exporters import langfuse, otlp_http, phoenix
from shipper.exporters.http import HTTPExporter
from shipper.otlp import wire
from shipper.otlp.encode import group_by_project
from shipper.processors.redact import RedactConfig, RedactProcessor
from shipper.processors.truncate import TruncateConfig, TruncateProcessor
from shipper.record import decode_payload
from shipper.stats import Counters
from shipper.values import Secret

BATCH = 2048
"""Spans per exporter request: the HTTP exporters' `batch.max_spans` default."""


def _records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    now = time.time_ns()
    out = [sample_record(rng, now + i) for i in range(n)]
    for rec in out:  # what the socket receiver adds
        rec["resource"] = {**(rec.get("resource") or {}), "process.pid": 1234, "process.real_user.id": 1000}
    return out


def _exporters(ctx: Context) -> dict[str, HTTPExporter]:
    """The three OTLP-family exporters on their defaults (nothing is sent: only `body` is called)."""
    return {"otlp_http": otlp_http.OTLPHTTPExporter(otlp_http.Config(endpoint="http://127.0.0.1:9"), ctx),
            "phoenix": phoenix.PhoenixExporter(phoenix.Config(), ctx),
            "langfuse": langfuse.LangfuseExporter(
                langfuse.Config(public_key="pk-lf-bench", secret_key=Secret("sk-lf-bench")), ctx)}


def _bodies(exporter: HTTPExporter, batch: list[dict[str, Any]]) -> list[bytes]:
    """The request bodies `exporter` makes of `batch`, as its `export` does (trace-wide fields filled in,
    one request per project)."""
    groups = group_by_project(wire.trace_wide(batch), exporter.default_project)
    return [exporter.body(spans, project) for project, spans in groups.items()]


def _recv_cost(lines: list[bytes]) -> Callable[[], float]:
    """One `recv_into` per datagram from a SOCK_SEQPACKET pair, as the socket receiver reads; returns
    the CPU seconds of the reads alone (not of the sends that fill the pair)."""
    def run() -> float:
        spent = 0.0
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with left, right:
            left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
            right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
            buffer = memoryview(bytearray(1 << 20))
            for start in range(0, len(lines), 256):  # what fits in the buffers at once
                for line in lines[start:start + 256]:
                    left.send(line)
                started = time.process_time()
                for _ in lines[start:start + 256]:
                    right.recv_into(buffer, 0, socket.MSG_TRUNC)
                spent += time.process_time() - started
        return spent
    return run


def measure(n: int, repeat: int) -> dict[str, float]:
    """us of CPU per span of each stage."""
    records = _records(n)
    lines = [orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE) for rec in records]
    ctx = Context("bench", Path(tempfile.mkdtemp(prefix="shsc")), Counters())
    redact = RedactProcessor(RedactConfig(builtin=["secrets"]), ctx)
    truncate = TruncateProcessor(TruncateConfig(max_value_bytes=64 * 1024), ctx)
    exporters = _exporters(ctx)
    batches = [records[i:i + BATCH] for i in range(0, n, BATCH)]
    bodies = [body for batch in batches for body in _bodies(exporters["otlp_http"], batch)]
    line_batches = [lines[i:i + BATCH] for i in range(0, n, BATCH)]

    def each(stage: Callable[[Any], Any], parts: list[Any]) -> Callable[[], None]:
        """`stage` over one batch at a time, its output let go before the next (the daemon's working set)."""
        def run() -> None:
            for part in parts:
                stage(part)
        return run

    stages: dict[str, Callable[[], float | None]] = {  # a stage that times itself returns its CPU seconds
        "recv_into (library)": _recv_cost(lines),
        "orjson.loads (library)": each(lambda part: [orjson.loads(line) for line in part], line_batches),
        "decode_payload (loads + validate)": each(lambda part: [decode_payload(line, 1 << 24) for line in part],
                                                  line_batches),
        "redact (default secrets)": each(redact, batches),
        "truncate (64 KiB)": each(truncate, batches),
        "queue line (orjson.dumps)": each(lambda part: [orjson.dumps(rec) for rec in part], batches),
        **{f"encode {name}": each(lambda part, e=exporter: _bodies(e, part), batches)
           for name, exporter in exporters.items()},
        "gzip level 1": each(lambda body: gzip.compress(body, compresslevel=1, mtime=0), bodies),
    }
    out: dict[str, float] = {}
    for label, stage in stages.items():
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            own = stage()
            best = min(best, own if own is not None else time.process_time() - started)
        out[label] = best / n * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=BATCH * 8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    costs = measure(args.n, args.repeat)
    for label, cost in costs.items():
        print(f"{label:36s} {cost:7.2f} us/span")
    receive = (costs["recv_into (library)"] + costs["decode_payload (loads + validate)"]
               + costs["redact (default secrets)"] + costs["truncate (64 KiB)"] + costs["queue line (orjson.dumps)"])
    send = costs["encode otlp_http"] + costs["gzip level 1"]
    print(f"socket -> file, stages:      {receive:6.2f} us/span (target 100k/CPU-s: 10.00)")
    print(f"socket -> otlp_http, stages: {receive + send:6.2f} us/span (target 50k/CPU-s: 20.00)")
    family = send + costs["encode phoenix"] + costs["encode langfuse"] + 2 * costs["gzip level 1"]
    print(f"three OTLP exporters / one, stages: {(receive + family) / (receive + send):4.2f} (target 1.50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
