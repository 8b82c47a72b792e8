"""OTLP/HTTP in -> OTLP/HTTP out, shipper beside Rotel (a Rust OpenTelemetry collector, PyPI `rotel`).

Both run on the same workload (`benchmarks.otlp_load`: N LLM spans, 12 attributes, in requests of 512
spans, protobuf) against the same sink (`benchmarks.sink`), each collector pinned to the service CPU,
sink and load on the app CPU. Neither gets a config the other lacks: shipper runs with no processors (Rotel
has none), one `otlp_http` exporter, its defaults otherwise (durable queue, batching, gzip level 1); Rotel
with `--exporter otlp --otlp-exporter-protocol http` (it gzips its requests at level 6 whatever its
compression flag says). Rotel sends spans on as they came, and so does `shipper` here (`forward_otlp:
true`: the requests are queued and sent unread, docs/forwarding.md); `shipper_converting` is the same
daemon with the exporter's default, converting each span to a record and back with the GenAI and
OpenInference attributes added (work Rotel does not do), measured in the same rounds. Per round and collector: CPU seconds (utime + stime of the collector process, all
threads, /proc/<pid>/stat) from the first request sent to the last span at the sink, and the bytes the
sink received (bytes on the wire, request bodies as sent). Rounds alternate the two; each figure is the
median of the rounds. Both collectors stay up across rounds, idle while the other one is measured.
"""

from __future__ import annotations

import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.machine import ROOT, cpu_seconds, rss_bytes
from benchmarks.processes import (
    APP_CPUS,
    ENV,
    SERVICE_CPUS,
    Daemon,
    Sink,
    free_port,
    pin,
    pin_app,
    short_dir,
    stop_process,
    wait_for,
)


def rotel_binary() -> str | None:
    """The `rotel-agent` executable of the installed `rotel` wheel (the `bench` extra), or None."""
    try:
        import rotel
    except ImportError:
        return None
    path = Path(rotel.__file__).parent / "rotel-agent"
    return str(path) if path.exists() else shutil.which("rotel-agent")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Rotel:
    """`rotel-agent start` in the foreground, receiving OTLP/HTTP and exporting OTLP/HTTP to `sink_url`."""

    def __init__(self, binary: str, sink_url: str) -> None:
        self.root = short_dir("shr")
        self.port = free_port()
        command = [binary, "start", "--otlp-http-endpoint", f"127.0.0.1:{self.port}",
                   "--otlp-grpc-endpoint", f"127.0.0.1:{free_port()}",
                   "--exporter", "otlp", "--otlp-exporter-endpoint", sink_url,
                   "--otlp-exporter-protocol", "http",
                   "--pid-file", str(self.root / "rotel.pid"), "--log-file", str(self.root / "rotel.log")]
        self.log_path = self.root / "stdout.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                         preexec_fn=lambda: pin(0, SERVICE_CPUS))  # every thread on it
        self.pid = self.proc.pid

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rotel-agent exited with {self.proc.returncode}: {self.log_path.read_text()}")
            return _listening(self.port)

        wait_for(up, 30, "rotel-agent listening")
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, 10)
        shutil.rmtree(self.root, ignore_errors=True)


def _shipper(sink_url: str, forward: bool) -> tuple[Daemon, str]:
    daemon = Daemon({"otlp": {"type": "otlp_http", "endpoint": sink_url, "forward_otlp": forward}},
                    receivers={"otlp": {"type": "otlp_http", "endpoint": "127.0.0.1:0"}}).start()
    port = daemon.status()["receivers"]["otlp"]["port"]
    return daemon, f"http://127.0.0.1:{port}/v1/traces"


def _round(pid: int, url: str, sink: Sink, n: int, timeout: float) -> dict[str, Any]:
    sink.reset()
    gen = subprocess.Popen([sys.executable, "-m", "benchmarks.otlp_load", "--url", url, "--n", str(n)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, cwd=ROOT, preexec_fn=pin_app)
    assert gen.stdout is not None and gen.stdin is not None
    try:
        if gen.stdout.readline().strip() != b"ready":
            raise RuntimeError("the OTLP load generator did not start")
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        gen.stdin.write(b"go\n")
        gen.stdin.flush()
        wait_for(lambda: sink.spans() >= n, timeout, f"{n} spans at the sink", interval=0.05)
        t1, cpu1 = time.monotonic(), cpu_seconds(pid)
        said = gen.stdout.readline().split()
        gen.wait(30)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait(10)
    if not said or said[0] != b"done":
        raise RuntimeError(f"the OTLP load generator failed: {b' '.join(said).decode()}")
    stats = sink.stats()
    cpu = cpu1 - cpu0
    return {"cpu_s": round(cpu, 4), "seconds": round(t1 - t0, 4), "us_per_span": round(cpu / n * 1e6, 2),
            "spans_per_cpu_s": round(n / cpu) if cpu > 0 else None, "bytes_in": int(said[2]),
            "bytes_out": stats["bytes"], "requests_out": stats["requests"], "rss_mb": round(rss_bytes(pid) / 2**20, 1)}


def _summary(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    cpu = statistics.median(r["cpu_s"] for r in runs)
    return {"us_per_span": round(cpu / n * 1e6, 2), "spans_per_cpu_s": round(n / cpu) if cpu > 0 else None,
            "bytes_out_per_span": round(statistics.median(r["bytes_out"] for r in runs) / n, 1),
            "bytes_in_per_span": round(statistics.median(r["bytes_in"] for r in runs) / n, 1),
            "rss_max_mb": max(r["rss_mb"] for r in runs), "runs": runs}


def measure(n: int, rounds: int, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    """`rounds` alternating rounds of n spans through shipper and Rotel; medians and the ratio."""
    binary = rotel_binary()
    if binary is None:  # a benchmark extra: without it the part is skipped, not failed
        log("  peer: skipped, rotel is not installed (pip install -e '.[bench]')")
        return {"skipped": "rotel is not installed: pip install -e '.[bench]'"}
    sink = Sink(cpus=APP_CPUS)
    runs: dict[str, list[dict[str, Any]]] = {"shipper": [], "rotel": [], "shipper_converting": []}
    daemon = converting = rotel = None
    try:
        daemon, shipper_url = _shipper(sink.url, forward=True)
        converting, converting_url = _shipper(sink.url, forward=False)
        rotel = Rotel(binary, sink.url)
        targets = {"shipper": (daemon.pid, shipper_url), "rotel": (rotel.pid, rotel.url),
                   "shipper_converting": (converting.pid, converting_url)}
        for pid, url in targets.values():  # warm up: connections, first allocations
            _round(pid, url, sink, min(n, 2048), timeout)
        for i in range(rounds):
            order = list(targets) if i % 2 == 0 else list(reversed(targets))
            for name in order:
                pid, url = targets[name]
                runs[name].append(_round(pid, url, sink, n, timeout))
                log(f"  peer: round {i + 1} {name}: {runs[name][-1]['us_per_span']} us CPU per span")
    finally:
        for shipper in (daemon, converting):
            if shipper is not None:
                shipper.stop()
        if rotel is not None:
            rotel.stop()
        sink.stop()
    out = {name: _summary(r, n) for name, r in runs.items()}
    rotel_us = out["rotel"]["us_per_span"]
    ratio = out["shipper"]["us_per_span"] / rotel_us if rotel_us else None
    converting_ratio = out["shipper_converting"]["us_per_span"] / rotel_us if rotel_us else None
    return {"n": n, "rounds": rounds, "variants": out,
            "ratio_cpu_shipper_over_rotel": round(ratio, 2) if ratio else None,
            "ratio_cpu_converting_over_rotel": round(converting_ratio, 2) if converting_ratio else None,
            "cpus": {"collectors": sorted(SERVICE_CPUS), "sink_and_load": sorted(APP_CPUS)},
            "settings": "OTLP/HTTP protobuf in (512 spans per request), one OTLP/HTTP exporter to the same sink; "
                        "shipper: no processors, forward_otlp: true, defaults otherwise (queue, batching, gzip "
                        "level 1); shipper_converting: the same with forward_otlp: false (the default); "
                        "rotel: --exporter otlp --otlp-exporter-protocol http (gzip level 6)",
            "rotel_version": _rotel_version(binary)}


def _rotel_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
