"""What one span costs the app, per tracing option, and how many spans a tight loop loses.

Each run is a fresh `benchmarks.app cost` process; repetitions are interleaved (every variant once, then
again, in a rotated order) and each figure is the median over repetitions. Where the spans go:
`up`: a running daemon (file exporter); `down`: no daemon (a socket path nobody listens on, so the spool
takes them); `deaf`: a receiver that accepts and never reads (the socket buffer fills, then the spool).
The `_paced` variants send 5,000 spans a second (in bursts of 1,000) to the running daemon, which keeps up,
so every send succeeds: the like-for-like comparison the targets are judged on. The tight loop overruns
the daemon: the socket fills and shipper spools (the floor has no fallback and loses what met EAGAIN).
Spans lost = emitted - reached, where reached counts what the daemon took in (socket and spool), what
the spool directory holds plus what the deaf receiver's socket queued, or what the OTLP sink decoded.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.machine import ROOT
from benchmarks.processes import ENV, Daemon, DeafReceiver, Sink, pin_app, short_dir, spool_lines, wait_for

PACED_RATE = 5_000.0  # spans per second of the paced variants: a busy app, within what the daemon takes in

# name: (option, where the spans go, spans per second or 0 for a tight loop)
VARIANTS: dict[str, tuple[str, str, float]] = {
    "none": ("none", "-", 0.0),
    "floor": ("floor", "up", 0.0),
    "span_up": ("span", "up", 0.0),
    "traced_up": ("traced", "up", 0.0),
    "span_down": ("span", "down", 0.0),
    "traced_down": ("traced", "down", 0.0),
    "span_deaf": ("span", "deaf", 0.0),
    "traced_deaf": ("traced", "deaf", 0.0),
    "otel": ("otel", "sink", 0.0),
    "floor_paced": ("floor", "up", PACED_RATE),
    "span_paced": ("span", "up", PACED_RATE),
    "traced_paced": ("traced", "up", PACED_RATE),
    "otel_paced": ("otel", "sink", PACED_RATE),
    # issue 12: a tight loop of TIGHT_N spans to a daemon on the embedded default config (redact, truncate,
    # file), not pinned, as users run it: it must keep up with one app thread or the client spools
    "floor_default": ("floor", "default", 0.0),
    "span_default": ("span", "default", 0.0),
    "traced_default": ("traced", "default", 0.0),
}
TIGHT_N = 50_000
FIGURES = ("p50_ns", "p99_ns", "p999_ns", "mean_ns", "cpu_ns", "wall_ns")


def otel_available() -> bool:
    """Whether the OpenTelemetry SDK and its OTLP/HTTP exporter are installed."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def _app(option: str, n: int, warmup: int, socket_path: str = "", spool: str = "", sink: str = "",
         rate: float = 0.0) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.app", "cost", option, "--n", str(n), "--warmup", str(warmup),
               "--socket", socket_path, "--spool", spool, "--sink", sink, "--rate", str(rate)]
    done = subprocess.run(command, capture_output=True, env=ENV, cwd=ROOT, timeout=600, preexec_fn=pin_app)
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.app cost {option} failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return orjson.loads(done.stdout.strip().splitlines()[-1])


class _Places:
    """The daemon and the sink shared by every run of a pass."""

    def __init__(self, need_sink: bool, default: bool = False) -> None:
        from benchmarks.throughput import DEFAULT_PROCESSORS

        self.daemon = Daemon({"file": {"type": "file"}}).start()
        self.default = (Daemon({"file": {"type": "file"}}, {"processors": DEFAULT_PROCESSORS}, pinned=False).start()
                        if default else None)
        self.sink = Sink() if need_sink else None

    def close(self) -> None:
        self.daemon.stop()
        if self.default is not None:
            self.default.stop()
        if self.sink is not None:
            self.sink.stop()

    def run(self, name: str, n: int, warmup: int, settle: float) -> dict[str, Any]:
        option, where, rate = VARIANTS[name]
        if where in ("up", "default"):
            daemon = self.daemon if where == "up" else self.default
            assert daemon is not None
            if where == "default":
                n = max(n, TIGHT_N) if n >= 10_000 else n  # the 50,000 in full runs
            before = daemon.received()
            result = _app(option, n, warmup, daemon.socket, daemon.spool, rate=rate)
            # The floor has no fallback: what met EAGAIN is gone (counted as lost), so wait only for what it sent.
            expected = result["info"]["sent"] if option == "floor" else result["emitted"]
            try:
                wait_for(lambda: daemon.received() - before >= expected, settle, "the daemon receiving every span",
                         interval=0.1)
            except TimeoutError:
                pass
            result["reached"] = daemon.received() - before
        elif where == "down":
            root = short_dir("shn")
            try:
                result = _app(option, n, warmup, str(root / "nobody.sock"), str(root / "spool"))
                result["reached"] = spool_lines(str(root / "spool"))
            finally:
                shutil.rmtree(root, ignore_errors=True)
        elif where == "deaf":
            deaf = DeafReceiver()
            try:
                result = _app(option, n, warmup, deaf.socket, deaf.spool)
                result["reached"] = deaf.drain() + spool_lines(deaf.spool)
            finally:
                deaf.close()
        elif where == "sink":
            assert self.sink is not None
            before = self.sink.spans()
            result = _app(option, n, warmup, sink=self.sink.url, rate=rate)
            result["reached"] = self.sink.spans() - before
        else:
            result = _app(option, n, warmup)
            result["reached"] = result["emitted"]
        result["lost"] = result["emitted"] - result["reached"]
        return result


def measure(n: int, warmup: int, reps: int, settle: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Every variant `reps` times, interleaved; medians, losses and the ratios the targets are about."""
    names = [name for name in VARIANTS if not name.startswith("otel") or otel_available()]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    places = _Places(need_sink=otel_available(), default=any(VARIANTS[name][1] == "default" for name in names))
    try:
        for rep in range(reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                runs[name].append(places.run(name, n, warmup, settle))
            log(f"  span cost: repetition {rep + 1}/{reps} done")
    finally:
        places.close()
    variants = {name: _summary(results) for name, results in runs.items()}
    return {"n": n, "warmup": warmup, "reps": reps, "variants": variants, "ratios": ratios(variants),
            "paced_rate": PACED_RATE,
            "skipped": [] if "otel" in names else ["otel: opentelemetry-sdk or its OTLP/HTTP exporter is not installed"]}


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {key: statistics.median(r[key] for r in results) for key in FIGURES}
    out["emitted"] = sum(r["emitted"] for r in results)
    out["reached"] = sum(r["reached"] for r in results)
    out["lost"] = sum(r["lost"] for r in results)
    spooled = sum(int(r["info"].get("spooled", 0)) for r in results)
    out["spooled"] = spooled
    out["dropped"] = sum(sum(r["info"].get("dropped", {}).values()) if isinstance(r["info"].get("dropped"), dict)
                         else 0 for r in results)
    out["runs"] = [{key: r[key] for key in (*FIGURES, "emitted", "reached", "lost")} for r in results]
    return out


def ratios(variants: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """shipper / floor, OpenTelemetry / shipper, and shipper's p99 over the floor's p50, tight and paced."""
    def r(a: str, b: str, key: str, key_b: str | None = None) -> float | None:
        if a not in variants or b not in variants:
            return None
        bottom = variants[b][key_b or key]
        return round(variants[a][key] / bottom, 3) if bottom else None

    out: dict[str, float | None] = {}
    families = [("floor", "otel", ("span_up", "traced_up", "span_down", "traced_down", "span_deaf", "traced_deaf")),
                ("floor_paced", "otel_paced", ("span_paced", "traced_paced")),
                ("floor_default", "otel", ("span_default", "traced_default"))]
    for floor, otel, names in families:
        for name in names:
            out[f"{name}/{floor} p50"] = r(name, floor, "p50_ns")
            out[f"{name}/{floor} cpu"] = r(name, floor, "cpu_ns")
            out[f"{name} p99/{floor} p50"] = r(name, floor, "p99_ns", "p50_ns")
        for name in names[:2]:
            out[f"{otel}/{name} p50"] = r(otel, name, "p50_ns")
            out[f"{otel}/{name} cpu"] = r(otel, name, "cpu_ns")
    out["floor_paced p99/floor_paced p50"] = r("floor_paced", "floor_paced", "p99_ns", "p50_ns")
    return out
