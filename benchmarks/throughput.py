"""The daemon's throughput and cost per span, end to end, and emit-to-backend latency.

Each scenario sends M benchmark records through a running daemon (default settings: batching, queues,
gzip) and waits until the last one is out: in the file exporter's count, or decoded by the OTLP sink
(one sink process; three exporters send it three copies). Timed from the first record offered to the
last one out; daemon CPU = utime + stime of the daemon process over the same interval. Sources: the
socket (a load generator process sending as fast as the daemon takes them) or the spool (one closed
spool file of M lines renamed into the directory). Latency: records paced at a steady rate, each stamped
`end_ns` when sent; the sink notes arrival minus `end_ns`; with the default batching (up to 200ms at
intake plus 1s at the exporter) and with both batch delays at 20ms.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.machine import ROOT, cpu_seconds
from benchmarks.processes import APP_CPUS, ENV, Daemon, Sink, pin_app, wait_for
from benchmarks.workload import sample_record

SCENARIOS = ("socket_file", "socket_otlp", "socket_otlp_x3", "spool_otlp", "spool_otlp_x3",
             "socket_file_defaults", "socket_otlp_defaults", "socket_family3_defaults")
# The embedded default config's processors (shipper/default_config.yaml): what the targets of issue 12 are
# measured with, in the `*_defaults` scenarios.
DEFAULT_PROCESSORS = [{"type": "redact", "builtin": ["secrets"]}, {"type": "truncate", "max_value_bytes": "64KiB"}]
# The OTLP family of exporters, all to the one sink: fan-out cost is `family3` (otlp_http, phoenix, langfuse)
# over `socket_otlp_defaults` (otlp_http alone).
_FAMILY = {"otlp": {"type": "otlp_http"}, "phoenix": {"type": "phoenix", "project": "bench"},
           "langfuse": {"type": "langfuse", "public_key": "pk-lf-bench", "secret_key": "sk-lf-bench"}}


def _loadgen(daemon: Daemon, n: int, rate: float = 0.0) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "benchmarks.loadgen", "--socket", daemon.socket, "--n", str(n)]
    if rate:
        command += ["--rate", str(rate)]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, cwd=ROOT,
                            preexec_fn=pin_app)  # the load on the app's CPU, the daemon alone on its own


def _write_spool_file(directory: str, n: int) -> tuple[Path, Path]:
    """M records in a hidden file of the spool directory (the daemon skips dot-names); (hidden, final)."""
    os.makedirs(directory, exist_ok=True)
    rng, now, option = random.Random(), time.time_ns(), orjson.OPT_APPEND_NEWLINE
    name = f"bench.{os.getpid()}.{now // 1_000_000}.ndjson"
    hidden, final = Path(directory, f".{name}.tmp"), Path(directory, name)
    hidden.write_bytes(b"".join(orjson.dumps(sample_record(rng, now), option=option) for _ in range(n)))
    return hidden, final


def _run(daemon: Daemon, source: str, n: int, out: Callable[[], int], expect: int, timeout: float) -> dict[str, Any]:
    start_out = out()
    if source == "socket":
        gen = _loadgen(daemon, n)
        assert gen.stdout is not None and gen.stdin is not None
        if gen.stdout.readline().strip() != b"ready":
            raise RuntimeError("the load generator did not start")
        cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        gen.stdin.write(b"go\n")
        gen.stdin.flush()
    else:
        hidden, final = _write_spool_file(daemon.spool, n)
        cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        os.rename(hidden, final)
    wait_for(lambda: out() - start_out >= expect, timeout, f"{expect} spans out of the daemon", interval=0.05)
    t1, cpu1 = time.monotonic(), cpu_seconds(daemon.pid)
    if source == "socket":
        gen.wait(30)
    seconds, cpu = t1 - t0, cpu1 - cpu0
    return {"spans": n, "seconds": round(seconds, 4), "spans_per_s": round(n / seconds),
            "daemon_cpu_s": round(cpu, 3), "cpu_s_per_100k": round(cpu / n * 100_000, 3),
            "spans_per_cpu_s": round(n / cpu) if cpu > 0 else None}


def _otlp_exporters(url: str, count: int) -> dict[str, Any]:
    return {f"otlp{i + 1}": {"type": "otlp_http", "endpoint": url} for i in range(count)}


def _family(url: str, count: int) -> dict[str, Any]:
    out = {}
    for name, spec in list(_FAMILY.items())[:count]:
        out[name] = {**spec, ("host" if spec["type"] == "langfuse" else "endpoint"): url}
    return out


def _percentiles(values: list[int]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    at = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6, 2)  # noqa: E731
    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] / 1e6, 2)}


def _latency(daemon: Daemon, sink: Sink, n: int, rate: float, timeout: float) -> dict[str, Any]:
    """Emit-to-sink latency of n records paced at `rate` per second."""
    sink.reset()
    gen = _loadgen(daemon, n, rate)
    gen.wait(n / rate + 60)
    wait_for(lambda: sink.spans() >= n, timeout, "paced spans at the sink", interval=0.1)
    return {"spans": n, "rate_per_s": rate, **_percentiles(sink.latencies())}


def measure(n: int, latency_n: int, latency_rate: float, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Every scenario once, with n records; then latency with latency_n records at latency_rate per second."""
    scenarios: dict[str, Any] = {}
    sink = Sink(cpus=APP_CPUS)
    try:
        daemon = Daemon({"file": {"type": "file"}}).start()
        try:
            scenarios["socket_file"] = _run(daemon, "socket", n, lambda: daemon.exported("file"), n, timeout)
        finally:
            daemon.stop()
        log("  daemon: socket -> file done")
        for count, suffix in ((1, ""), (3, "_x3")):
            daemon = Daemon(_otlp_exporters(sink.url, count)).start()
            try:
                for source in ("socket", "spool"):
                    sink.reset()
                    scenarios[f"{source}_otlp{suffix}"] = _run(daemon, source, n, sink.spans, n * count, timeout)
                    log(f"  daemon: {source} -> {count} OTLP exporter(s) done")
                if count == 1:
                    latency = _latency(daemon, sink, latency_n, latency_rate, timeout)
                    log("  daemon: latency done")
            finally:
                daemon.stop()
        defaults = {"processors": DEFAULT_PROCESSORS}
        daemon = Daemon({"file": {"type": "file"}}, defaults).start()
        try:
            scenarios["socket_file_defaults"] = _run(daemon, "socket", n, lambda: daemon.exported("file"), n, timeout)
        finally:
            daemon.stop()
        for name, exporters, count in (("socket_otlp_defaults", _otlp_exporters(sink.url, 1), 1),
                                       ("socket_family3_defaults", _family(sink.url, 3), 3)):
            daemon = Daemon(exporters, defaults).start()
            try:
                sink.reset()
                scenarios[name] = _run(daemon, "socket", n, sink.spans, n * count, timeout)
            finally:
                daemon.stop()
            log(f"  daemon: {name} done")
        quick = {"max_delay": "20ms"}
        daemon = Daemon({"otlp1": {"type": "otlp_http", "endpoint": sink.url, "batch": quick}}, {"batch": quick}).start()
        try:
            latency_short = _latency(daemon, sink, latency_n, latency_rate, timeout)
            log("  daemon: latency with 20ms batch delays done")
        finally:
            daemon.stop()
    finally:
        sink.stop()
    ratios = {}
    one, three = (scenarios.get(k, {}).get("daemon_cpu_s") for k in ("socket_otlp_defaults", "socket_family3_defaults"))
    if one and three:
        ratios["fanout_cpu_family3/otlp"] = round(three / one, 3)
    return {"n": n, "scenarios": scenarios, "ratios": ratios, "latency": latency, "latency_short_batches": latency_short,
            "settings": "daemon defaults (intake batch max_delay 200ms; exporter batch 512 spans, 2048 for HTTP exporters, / 1s; "
                        "queue fsync interval; gzip protobuf)"}
