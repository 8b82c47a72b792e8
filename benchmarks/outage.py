"""The daemon's memory through a backend outage, with the backlog on disk, and how it drains after.

The daemon's OTLP exporter points at a port nobody listens on (connection refused: retryable); a load
generator sends paced records for the whole outage while we sample the daemon's RSS and its queue's
bytes on disk. Then the sink comes up on that port and we time the drain until every record arrived.
Retry is set to 1s..5s so the drain starts within seconds of the backend's return.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.machine import rss_bytes
from benchmarks.processes import APP_CPUS, Daemon, Sink, free_port, wait_for
from benchmarks.throughput import _loadgen

MB = 1024 * 1024


def measure(seconds: float, rate: float, sample_every: float, log: Callable[[str], None]) -> dict[str, Any]:
    """An outage of `seconds` with `rate` spans per second coming in; RSS sampled every `sample_every` s."""
    port = free_port()
    exporter = {"type": "otlp_http", "endpoint": f"http://127.0.0.1:{port}",
                "retry": {"initial_interval": "1s", "max_interval": "5s"}}
    daemon = Daemon({"otlp": exporter}).start()
    sink: Sink | None = None
    n = int(seconds * rate)
    samples: list[list[float]] = []
    try:
        def queue_bytes() -> int:
            return int(daemon.status()["exporters"]["otlp"].get("queue_bytes", 0))

        start = time.monotonic()
        rss_start = rss_bytes(daemon.pid)
        gen = _loadgen(daemon, n, rate)
        next_sample = start
        while gen.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                samples.append([round(now - start, 2), round(rss_bytes(daemon.pid) / MB, 2), round(queue_bytes() / MB, 2)])
                next_sample = now + sample_every
            time.sleep(min(0.1, sample_every))
        wait_for(lambda: daemon.received() >= n, 60, "the daemon taking in every record", interval=0.1)
        outage_s = time.monotonic() - start
        backlog = queue_bytes()
        rss_outage_end = rss_bytes(daemon.pid)
        samples.append([round(outage_s, 2), round(rss_outage_end / MB, 2), round(backlog / MB, 2)])
        log(f"  outage: {outage_s:.0f} s with the backend down, {backlog / MB:.1f} MiB queued on disk")
        sink = Sink(port, cpus=APP_CPUS)
        up = time.monotonic()
        peak_drain = 0
        while sink.spans() < n:
            peak_drain = max(peak_drain, rss_bytes(daemon.pid))
            if time.monotonic() - up > max(120.0, seconds):
                break
            time.sleep(0.1)
        drain_s = time.monotonic() - up
        arrived = sink.spans()
        rss_end = rss_bytes(daemon.pid)
        samples.append([round(time.monotonic() - start, 2), round(rss_end / MB, 2), round(queue_bytes() / MB, 2)])
    finally:
        daemon.stop()
        if sink is not None:
            sink.stop()
    rss = [s[1] for s in samples]
    return {"outage_s": round(outage_s, 1), "rate_per_s": rate, "spans": n, "arrived": arrived, "lost": n - arrived,
            "backlog_mb": round(backlog / MB, 2), "rss_start_mb": round(rss_start / MB, 2),
            "rss_max_mb": max([*rss, round(peak_drain / MB, 2)]), "rss_outage_end_mb": round(rss_outage_end / MB, 2),
            "rss_end_mb": round(rss_end / MB, 2), "drain_s": round(drain_s, 2), "samples": samples,
            "columns": ["t_s", "rss_mb", "queue_mb"]}
