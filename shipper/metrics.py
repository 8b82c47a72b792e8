"""Prometheus metrics of the running daemon, on a loopback HTTP endpoint (`metrics: {endpoint: ...}`).

Off unless `metrics.endpoint` is set (`127.0.0.1:9464` is the suggested port); `GET /metrics` answers in
the Prometheus text format. Everything is read at scrape time from the same counters and figures that
`shipper status` prints, so the two always agree:

    shipper_received_total{section,component}          records received (receivers; pipeline/intake)
    shipper_exported_total{section,component}          records an exporter delivered
    shipper_retried_total, shipper_dead_lettered_total, shipper_refused_total, ...
                                                       every other counter of `pipeline.stats`, by name
    shipper_dropped_total{section,component,reason}    records not delivered, by reason (docs/transports.md, Drop reasons)
    shipper_malformed_total{section,component,reason}  malformed records, by what was wrong
    shipper_queue_items / _bytes / _oldest_age_seconds{section,component}
                                                       and every other number an exporter or receiver
                                                       reports live in `status` (`_s` becomes `_seconds`)
    shipper_export_latency_seconds{exporter}           histogram: one `export()` call, success or not
    shipper_uptime_seconds, shipper_info{version}
    process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...

The server runs on the daemon's event loop (no thread), so a scrape sees consistent counters, and a scrape
that answers is itself a sign the loop is alive.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shipper.errors import ConfigError
from shipper.version import VERSION

if TYPE_CHECKING:
    from shipper.pipeline import Pipeline

__all__ = ["EXPORT_LATENCY", "MetricsServer", "PipelineCollector", "install", "observe_export_latency",
           "server_for", "time_exports"]

log = logging.getLogger("shipper.metrics")

EXPORT_LATENCY = Histogram(
    "shipper_export_latency_seconds", "Time one exporter's export() call took, success or failure.",
    ["exporter"], registry=None,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_COUNTER_HELP = {
    "received": "Records received.",
    "exported": "Records an exporter delivered.",
    "retried": "Export attempts retried.",
    "dead_lettered": "Records a backend refused for good, kept as dead letters.",
    "refused": "Connections refused by the uid/gid allow-list.",
}
MAX_REQUEST = 8192


def observe_export_latency(exporter: str, seconds: float) -> None:
    """Record how long one export call to `exporter` took (the hook delivery code calls)."""
    EXPORT_LATENCY.labels(exporter).observe(seconds)


def _gauge_name(key: str) -> str:
    return "shipper_" + (key[:-2] + "_seconds" if key.endswith("_s") else key)


class PipelineCollector:
    """A prometheus-client collector reading a pipeline's counters and live figures at each scrape."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        snapshot = self.pipeline.stats.snapshot()
        status = self.pipeline.status()
        labels = ["section", "component"]
        counters: dict[str, CounterMetricFamily] = {}
        dropped = CounterMetricFamily("shipper_dropped", "Records not delivered, by reason.",
                                      labels=[*labels, "reason"])
        malformed = CounterMetricFamily("shipper_malformed", "Malformed records, by what was wrong.",
                                        labels=[*labels, "reason"])
        for section, components in snapshot.items():
            for name, figures in components.items():
                for key, value in figures.items():
                    if key in {"dropped", "malformed"}:
                        family = dropped if key == "dropped" else malformed
                        for reason, n in value.items():
                            family.add_metric([section, name, str(reason)], n)
                    elif isinstance(value, int) and not isinstance(value, bool) and _NAME.match(key):
                        if key not in counters:
                            counters[key] = CounterMetricFamily(
                                f"shipper_{key}", _COUNTER_HELP.get(key, f"Count of {key.replace('_', ' ')}."),
                                labels=labels)
                        counters[key].add_metric([section, name], value)
        for key in ("received", "exported"):
            counters.setdefault(key, CounterMetricFamily(f"shipper_{key}", _COUNTER_HELP[key], labels=labels))
        yield from counters.values()
        yield dropped
        yield malformed
        taken = {f"shipper_{key}" for key in counters} | {"shipper_dropped", "shipper_malformed"}
        gauges: dict[str, GaugeMetricFamily] = {}
        for section in ("receivers", "exporters"):
            for name, figures in status.get(section, {}).items():
                counted = snapshot.get(section, {}).get(name, {})
                for key, value in figures.items():
                    if value is None and key.endswith("_age_s"):
                        value = 0  # nothing waiting: the oldest is zero seconds old
                    if key in counted or isinstance(value, bool) or not isinstance(value, (int, float)):
                        continue
                    metric = _gauge_name(key)
                    if metric in taken or not _NAME.match(key):
                        continue
                    if metric not in gauges:
                        gauges[metric] = GaugeMetricFamily(metric, f"Live figure {key} of a component.",
                                                           labels=labels)
                    gauges[metric].add_metric([section, name], value)
        yield from gauges.values()
        yield from _partition_gauges(status)
        yield GaugeMetricFamily("shipper_uptime_seconds", "Seconds since the daemon started.",
                                value=float(status.get("uptime_s", 0)))
        info = GaugeMetricFamily("shipper_info", "The running shipper.", labels=["version", "config"])
        info.add_metric([VERSION, str(status.get("config", ""))], 1)
        yield info


def _partition_gauges(status: dict[str, Any]) -> Iterator[Metric]:
    """Per partition figures of the receivers that have partitions (kafka): lag, committed offset."""
    labels = ["component", "topic", "partition"]
    families = {key: GaugeMetricFamily(f"shipper_partition_{key}", help_text, labels=labels) for key, help_text in (
        ("lag", "Messages between a partition's committed offset and its high watermark."),
        ("committed_offset", "The consumer group's committed offset of a partition."),
        ("high_watermark", "The offset after a partition's last message, as last fetched."))}
    for name, figures in status.get("receivers", {}).items():
        for where, each in (figures.get("partitions") or {}).items():
            topic, _, partition = where.rpartition("/")
            for key, source in (("lag", "lag"), ("committed_offset", "committed"), ("high_watermark", "high_watermark")):
                if isinstance(each.get(source), int):
                    families[key].add_metric([name, topic, partition], each[source])
    yield from families.values()


def _timed(name: str, export: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(export)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await export(*args, **kwargs)
        finally:
            observe_export_latency(name, time.perf_counter() - started)
    return timed


class MetricsServer:
    """A minimal HTTP/1.0 server for `GET /metrics`, bound at construction, served on the event loop."""

    def __init__(self, endpoint: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ConfigError([f"metrics.endpoint: cannot resolve {endpoint}: {exc.strerror or exc}"]) from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise ConfigError([f"metrics.endpoint: cannot listen on {endpoint}: {exc.strerror or exc}; "
                               "choose another port or stop what uses it"]) from exc
        sock.setblocking(False)
        self._sock: socket.socket | None = sock
        bound = sock.getsockname()
        self.url = f"http://{'[' + bound[0] + ']' if family == socket.AF_INET6 else bound[0]}:{bound[1]}/metrics"

    async def serve(self, pipeline: Pipeline | None = None) -> None:
        """Answer scrapes until cancelled; closes the socket at the end."""
        assert self._sock is not None, "serve() after aclose()"
        listener = self._sock
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    await anyio.wait_readable(listener)
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        log.error("Cannot accept a metrics scrape on %s: %s.", self.url, exc.strerror)
                        await anyio.sleep(0.5)
                        continue
                    tg.start_soon(self._answer, conn)
        finally:
            self.close()

    async def _answer(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        with conn, anyio.move_on_after(5):
            head = b""
            while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_REQUEST:
                await anyio.wait_readable(conn)
                try:
                    chunk = conn.recv(MAX_REQUEST)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                if not chunk:
                    break
                head += chunk
            await self._send(conn, self._response(head))

    def _response(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
        if method not in (b"GET", b"HEAD"):
            return _http(405, b"text/plain", b"Only GET is served here.\n")
        if path == b"/metrics":
            body = generate_latest(self.registry)
            return _http(200, CONTENT_TYPE_LATEST.encode(), b"" if method == b"HEAD" else body, len(body))
        if path == b"/":
            return _http(200, b"text/plain", b"shipper: metrics are at /metrics\n")
        return _http(404, b"text/plain", b"Not found: metrics are at /metrics\n")

    @staticmethod
    async def _send(conn: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[conn.send(view):]
            except (BlockingIOError, InterruptedError):
                await anyio.wait_writable(conn)
            except OSError:
                return

    def close(self) -> None:
        """Stop listening. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _http(code: int, content_type: bytes, body: bytes, length: int | None = None) -> bytes:
    reason = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}[code]
    return (b"HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (code, reason, content_type, len(body) if length is None else length)) + body


def install(pipeline: Pipeline) -> MetricsServer | None:
    """Bind the endpoint from `metrics.endpoint` (a ConfigError if it cannot) and serve it with the daemon."""
    endpoint = pipeline.settings.metrics.endpoint
    if not endpoint:
        return None
    server = server_for(pipeline, endpoint)
    for name, sink in pipeline.sinks.items():
        time_exports(name, getattr(sink, "exporter", None))
    pipeline.services.append(server.serve)
    pipeline.metrics_server = server
    log.info("Serving metrics on %s.", server.url)
    return server


def server_for(pipeline: Pipeline, endpoint: str) -> MetricsServer:
    """A bound (not yet serving) metrics server for `pipeline` on `endpoint`; ConfigError if it cannot bind."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(pipeline))
    registry.register(EXPORT_LATENCY)
    ProcessCollector(registry=registry)
    return MetricsServer(endpoint, registry)


def time_exports(name: str, exporter: Any) -> None:
    """Observe the latency of each export call of `exporter` (one added at a reload too), once."""
    if exporter is None or getattr(exporter, "_export_timed", False):
        return
    if hasattr(exporter, "export"):
        exporter.export = _timed(name, exporter.export)
    if hasattr(exporter, "export_ndjson"):  # the file exporter's undecoded path
        exporter.export_ndjson = _timed(name, exporter.export_ndjson)
    exporter._export_timed = True
