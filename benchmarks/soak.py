"""Soak: mixed load for minutes, the daemon killed with SIGKILL at a fixed period, a backend that flaps.

Load, each from its own process, every span named `<transport>-<n>` so the backend can tell which arrived:
- `socket1`: the client shim, one record per SEQPACKET message (`shipper.span`), socket with spool fallback;
- `socketN`: the client transport, `BATCH` records per message;
- `spool`: the client shim in mode `spool` (append-only files the daemon's spool receiver reads);
- `otlp`: OTLP/HTTP protobuf requests of `BATCH` spans to the daemon's `otlp_http` receiver, each request
  retried (after 0.5 s, or its `Retry-After`) until it is answered 200, as an OpenTelemetry SDK would.
The daemon exports everything to one `otlp_http` exporter whose backend cycles through `SCHEDULE`: 200,
503, 429 with `Retry-After: 1`, hanging past the exporter's timeout, resetting the TCP connection. Only
spans of requests answered 200 count as delivered. Every `kill_every` seconds the daemon gets SIGKILL and
is started again on the same state. At the end the load stops, the backend answers 200 for good, and we
wait for the backlog to drain.

Per transport: `emitted`; `sent` (the client's count: records the daemon took on the socket, or OTLP spans
answered 200), `spooled` (socket clients); `delivered` (distinct spans at the backend), `duplicated`
(deliveries beyond the first), `lost` (emitted and accepted by shipper, i.e. sent or spooled, but never
delivered). Plus the daemon's peak RSS over the run, its drop counters and the number of kills.

`python -m benchmarks.soak load KIND ...` is the load generator (started by `measure`).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.machine import ROOT, rss_bytes
from benchmarks.processes import APP_CPUS, ENV, Daemon, free_port, pin

MB = 1024 * 1024
BATCH = 20
KINDS = ("socket1", "socketN", "spool", "otlp")
RATES = {"socket1": 150.0, "socketN": 150.0, "spool": 100.0, "otlp": 100.0}  # spans per second
# The backend's behaviour over time: (mode, seconds), repeated. Mostly up, so the backlog drains between faults.
SCHEDULE = (("ok", 12.0), ("503", 4.0), ("ok", 8.0), ("429", 4.0), ("ok", 8.0), ("hang", 4.0), ("ok", 8.0),
            ("reset", 4.0))
EXPORTER_TIMEOUT_S = 2.0
HANG_S = EXPORTER_TIMEOUT_S + 2.0


class FlappingBackend:
    """An OTLP/HTTP backend in a thread that follows `SCHEDULE` and counts the span names it took (200)."""

    def __init__(self) -> None:
        self.names: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.steady = False  # True: always 200 (the drain at the end)
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                mode = backend.mode()
                with backend.lock:
                    backend.replies[mode] += 1
                if mode == "hang":
                    time.sleep(HANG_S)
                    self.close_connection = True
                    return
                if mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if mode in ("503", "429"):
                    self.send_response(int(mode))
                    if mode == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                names = backend.decode(body, self.headers.get("content-encoding"))
                if names is None:
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with backend.lock:
                    backend.names.update(names)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def mode(self) -> str:
        if self.steady:
            return "ok"
        period = sum(seconds for _, seconds in SCHEDULE)
        t = (time.monotonic() - self.started) % period
        for mode, seconds in SCHEDULE:
            if t < seconds:
                return mode
            t -= seconds
        return "ok"

    @staticmethod
    def decode(body: bytes, encoding: str | None) -> list[str] | None:
        import gzip
        import zlib

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
        except Exception:
            return None
        return [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.names)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- load generators (run as `python -m benchmarks.soak load KIND ...`) ---------------------------------

def _record(name: str, i: int) -> dict[str, Any]:
    now = time.time_ns()
    return {"v": 1, "trace_id": f"{(i // 10) + 1:032x}", "span_id": f"{i + 1:016x}", "name": name,
            "start_ns": now - 1_000_000, "end_ns": now, "kind": "llm", "service": "soak",
            "attributes": {"soak.seq": i}}


def _paced(rate: float, step: int, stop: Path, send: Callable[[int], None]) -> int:
    """Call `send(first_index)` every `step / rate` seconds until `stop` exists; the number emitted."""
    start, i = time.monotonic(), 0
    while not stop.exists():
        send(i)
        i += step
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return i


def _load_socket1(args: argparse.Namespace) -> dict[str, Any]:
    import shipper

    shipper.configure(service="soak-socket1", socket=args.socket, spool_dir=args.spool)

    def send(i: int) -> None:
        with shipper.span(f"socket1-{i}", kind="llm"):
            pass
    emitted = _paced(args.rate, 1, Path(args.stop), send)
    stats = shipper.statistics()
    return {"emitted": emitted, "sent": stats["sent"], "spooled": stats["spooled"], "dropped": stats["dropped"],
            "spooled_by_reason": stats["spooled_by_reason"]}


def _load_socket_n(args: argparse.Namespace) -> dict[str, Any]:
    import orjson

    from shipper.client import config, transport

    active = transport.install(config.load_settings(strict=True, service="soak-socketN", socket=args.socket,
                                                    spool_dir=args.spool))

    def send(i: int) -> None:
        active.send(b"".join(orjson.dumps(_record(f"socketN-{i + k}", i + k)) + b"\n" for k in range(BATCH)))
    emitted = _paced(args.rate, BATCH, Path(args.stop), send)
    stats = active.statistics()  # counted per message here: BATCH records each
    return {"emitted": emitted, "sent": stats["sent"] * BATCH, "spooled": stats["spooled"] * BATCH,
            "dropped": {k: v * BATCH for k, v in stats["dropped"].items()},
            "spooled_by_reason": {k: v * BATCH for k, v in stats["spooled_by_reason"].items()}}


def _load_spool(args: argparse.Namespace) -> dict[str, Any]:
    import shipper

    shipper.configure(service="soak-spool", mode="spool", spool_dir=args.spool)

    def send(i: int) -> None:
        with shipper.span(f"spool-{i}", kind="llm"):
            pass
    emitted = _paced(args.rate, 1, Path(args.stop), send)
    stats = shipper.statistics()
    return {"emitted": emitted, "sent": 0, "spooled": stats["spooled"], "dropped": stats["dropped"],
            "spooled_by_reason": stats["spooled_by_reason"]}


def _load_otlp(args: argparse.Namespace) -> dict[str, Any]:
    import http.client

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    host, port = args.otlp.rsplit(":", 1)
    stop = Path(args.stop)
    accepted = failures = 0
    answers: Counter[str] = Counter()

    def request(i: int) -> bytes:
        now = time.time_ns()
        spans = [Span(trace_id=(i // BATCH + 1).to_bytes(16, "big"), span_id=(i + k + 1).to_bytes(8, "big"),
                      name=f"otlp-{i + k}", start_time_unix_nano=now - 1_000_000, end_time_unix_nano=now)
                 for k in range(BATCH)]
        resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="soak-otlp"))])
        message = ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource,
                                                                          scope_spans=[ScopeSpans(spans=spans)])])
        return message.SerializeToString()

    def send(i: int) -> None:
        nonlocal accepted, failures
        body = request(i)
        give_up = None
        while True:
            wait = 0.5
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                answer = conn.getresponse()
                answer.read()
                conn.close()
                answers[str(answer.status)] += 1
                if answer.status == 200:
                    accepted += BATCH
                    return
                wait = float(answer.getheader("Retry-After") or 0.5)
            except (OSError, http.client.HTTPException) as exc:
                answers[type(exc).__name__] += 1
            failures += 1
            if stop.exists():  # stopping: a request not yet taken still gets 60 s to go through
                give_up = give_up or time.monotonic() + 60
                if time.monotonic() > give_up:
                    return
            time.sleep(min(wait, 5.0))

    emitted = _paced(args.rate, BATCH, stop, send)
    return {"emitted": emitted, "sent": accepted, "spooled": 0, "dropped": {}, "failed_attempts": failures,
            "answers": dict(answers)}


LOADS = {"socket1": _load_socket1, "socketN": _load_socket_n, "spool": _load_spool, "otlp": _load_otlp}


def load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak load")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--socket", default="")
    parser.add_argument("--spool", default="")
    parser.add_argument("--otlp", default="")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--stop", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(LOADS[args.kind](args)), flush=True)
    return 0


# -- the run ------------------------------------------------------------------------------------------

def _prefix_counts(names: Counter[str]) -> dict[str, tuple[set[str], int]]:
    out: dict[str, tuple[set[str], int]] = {kind: (set(), 0) for kind in KINDS}
    for name, count in names.items():
        kind = name.rsplit("-", 1)[0]
        if kind in out:
            distinct, total = out[kind]
            distinct.add(name)
            out[kind] = (distinct, total + count)
    return out


def measure(seconds: float, kill_every: float, log: Callable[[str], None], drain_timeout: float = 300.0,
            sample_every: float = 0.5, settle: float = 20.0) -> dict[str, Any]:
    """Run the soak for `seconds`, SIGKILL the daemon every `kill_every` seconds; the figures."""
    backend = FlappingBackend()
    otlp_port = free_port()
    exporter = {"type": "otlp_http", "endpoint": backend.url, "timeout": f"{EXPORTER_TIMEOUT_S}s",
                "retry": {"initial_interval": "200ms", "max_interval": "2s"}}
    daemon = Daemon({"backend": exporter}, extra={"batch": {"max_delay": "100ms"}})
    daemon.config["receivers"] = {
        "socket": {"type": "unix_socket", "path": daemon.socket},
        "spool": {"type": "spool", "dir": daemon.spool, "poll_interval": "100ms"},
        "otlp": {"type": "otlp_http", "endpoint": f"127.0.0.1:{otlp_port}"},
    }
    daemon.config_path.write_text(__import__("yaml").safe_dump(daemon.config))
    stop = daemon.root / "stop"
    loads: dict[str, subprocess.Popen[bytes]] = {}
    kills: list[dict[str, Any]] = []
    rss_peak = 0
    drops: Counter[str] = Counter()
    started = time.monotonic()
    try:
        daemon.start()
        for kind in KINDS:
            cmd = [sys.executable, "-m", "benchmarks.soak", "load", kind, "--socket", daemon.socket,
                   "--spool", daemon.spool, "--otlp", f"127.0.0.1:{otlp_port}", "--rate", str(RATES[kind]),
                   "--stop", str(stop)]
            loads[kind] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
            pin(loads[kind].pid, APP_CPUS)
        next_kill = started + kill_every
        end = started + seconds
        last_log = started
        while (now := time.monotonic()) < end:
            try:
                rss_peak = max(rss_peak, rss_bytes(daemon.pid))
            except OSError:
                pass
            if now >= next_kill:
                drops.update(_drops(daemon))
                assert daemon.proc is not None
                daemon.proc.kill()
                daemon.proc.wait(10)
                killed_at = time.monotonic()
                daemon.start()
                kills.append({"t_s": round(killed_at - started, 1),
                              "restart_s": round(time.monotonic() - killed_at, 2)})
                next_kill += kill_every
            if now - last_log >= 60:
                log(f"  soak: {now - started:.0f}/{seconds:.0f} s, {len(kills)} kills, peak RSS "
                    f"{rss_peak / MB:.0f} MiB, backend took {sum(backend.snapshot().values())} spans")
                last_log = now
            time.sleep(sample_every)
        stop.touch()
        results: dict[str, dict[str, Any]] = {}
        for kind, proc in loads.items():
            out, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"the {kind} load generator failed: {err.decode(errors='replace')[-2000:]}")
            results[kind] = json.loads(out)
        load_s = time.monotonic() - started
        backend.steady = True
        expected = {kind: r["sent"] + r["spooled"] for kind, r in results.items()}
        drain_start = time.monotonic()
        stable_since, last = time.monotonic(), -1
        while time.monotonic() - drain_start < drain_timeout:
            rss_peak = max(rss_peak, rss_bytes(daemon.pid))
            counts = _prefix_counts(backend.snapshot())
            if all(len(counts[k][0]) >= expected[k] for k in KINDS):
                break
            total = sum(len(v[0]) for v in counts.values())
            if total != last:
                stable_since, last = time.monotonic(), total
            elif time.monotonic() - stable_since > settle:
                break  # nothing new for `settle` s with the backend up: what is missing is not coming
            time.sleep(0.5)
        drain_s = time.monotonic() - drain_start
        drops.update(_drops(daemon))
        status = daemon.status()
    finally:
        stop.touch()
        for proc in loads.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        daemon.stop()
        backend.stop()
    counts = _prefix_counts(backend.snapshot())
    transports = {}
    for kind in KINDS:
        r = results[kind]
        distinct, total = counts[kind]
        accepted = r["sent"] + r["spooled"]
        emitted_names = {f"{kind}-{i}" for i in range(r["emitted"])}
        transports[kind] = {
            "emitted": r["emitted"], "sent": r["sent"], "spooled": r["spooled"],
            "client_dropped": sum(r["dropped"].values()),
            "delivered": len(distinct & emitted_names), "duplicated": total - len(distinct),
            "lost": max(accepted - len(distinct & emitted_names), 0),
            "unsent": r["emitted"] - accepted - sum(r["dropped"].values()),
            **({"spooled_by_reason": r["spooled_by_reason"]} if r.get("spooled_by_reason") else {}),
            **({"answers": r["answers"], "failed_attempts": r["failed_attempts"]} if kind == "otlp" else {}),
        }
    socket_lost = transports["socket1"]["lost"] + transports["socketN"]["lost"]
    return {
        "seconds": round(load_s, 1), "kill_every_s": kill_every, "kills": len(kills), "kill_times": kills,
        "rates_per_s": RATES, "batch": BATCH, "schedule": [list(x) for x in SCHEDULE],
        "backend_replies": dict(backend.replies), "drain_s": round(drain_s, 1),
        "transports": transports,
        "lost": sum(t["lost"] for t in transports.values()),
        "socket_lost_per_kill": round(socket_lost / len(kills), 1) if kills else float(socket_lost),
        "rss_peak_mb": round(rss_peak / MB, 1),
        "daemon_dropped": dict(drops), "malformed": status.get("pipeline", {}).get("malformed", {}),
    }


def _drops(daemon: Daemon) -> Counter[str]:
    """The daemon's drop counters so far (they restart at zero with each new daemon process)."""
    try:
        return Counter(daemon.status().get("dropped", {}))
    except Exception:
        return Counter()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        return load_main(argv[1:])
    print("usage: python -m benchmarks run --parts soak [--soak-seconds S] (this module's `load` is internal)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
