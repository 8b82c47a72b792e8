"""The targets a run is held to (issue 7), each with the figure it reached and whether it met it."""

from __future__ import annotations

from typing import Any


def _target(goal: str, value: Any, met: bool | None, figure: str) -> dict[str, Any]:
    return {"goal": goal, "value": value, "met": met, "figure": figure}


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def evaluate(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every target whose parts were measured in this run."""
    out: dict[str, dict[str, Any]] = {}
    cost = result.get("span_cost")
    if cost:
        v, ratios = cost["variants"], cost["ratios"]
        for name, floor in (("span_default", "floor_default"), ("traced_default", "floor_default")):
            for key in ("p50", "cpu"):  # issue 12: the tight loop, daemon on the embedded default, unpinned
                value = ratios.get(f"{name}/{floor} {key}")
                if value is not None:
                    out[f"{name} {key} <= 1.5x floor (tight, default config)"] = _target(
                        "<= 1.5", value, _le(value, 1.5), f"{name}/{floor} {key}")
        for name in ("span_paced", "traced_paced"):  # like for like: every send succeeds, nothing spooled
            p50, cpu = ratios.get(f"{name}/floor_paced p50"), ratios.get(f"{name}/floor_paced cpu")
            out[f"{name} p50 <= 1.5x floor"] = _target("<= 1.5", p50, _le(p50, 1.5), f"{name}/floor_paced p50")
            out[f"{name} cpu <= 1.5x floor"] = _target("<= 1.5", cpu, _le(cpu, 1.5), f"{name}/floor_paced cpu")
            tail = ratios.get(f"{name} p99/floor_paced p50")
            out[f"{name} p99 <= 5x floor p50"] = _target("<= 5", tail, _le(tail, 5), f"{name} p99/floor_paced p50")
            for key in ("p50", "cpu"):
                otel = ratios.get(f"otel_paced/{name} {key}")
                out[f"{name} {key} >= 8x cheaper than otel"] = _target(
                    ">= 8", otel, None if otel is None else otel >= 8, f"otel_paced/{name} {key}")
        lost = sum(v[name]["lost"] for name in v if name.startswith(("span", "traced")))
        out["no span lost in a tight loop (shipper)"] = _target("0", lost, lost == 0, "sum of lost, shipper variants")
    exits = result.get("exit")
    if exits:
        down = exits["variants"]["shipper_down"]["added_ms"]
        out["exit <= +10 ms, daemon down"] = _target("<= 10 ms", down, down <= 10, "exit.shipper_down.added_ms")
    daemon = result.get("daemon")
    if daemon:
        rate = daemon["scenarios"].get("socket_otlp", {}).get("spans_per_cpu_s")
        out["daemon >= 50k spans/CPU-s to OTLP"] = _target(">= 50000", rate, rate is not None and rate >= 50_000,
                                                          "daemon.socket_otlp.spans_per_cpu_s")
        scenarios = daemon["scenarios"]
        for key, goal in (("socket_otlp_defaults", 50_000), ("socket_file_defaults", 100_000)):
            value = scenarios.get(key, {}).get("spans_per_cpu_s")
            if key in scenarios:
                out[f"{key} >= {goal // 1000}k spans/CPU-s"] = _target(
                    f">= {goal}", value, value is not None and value >= goal, f"daemon.{key}.spans_per_cpu_s")
        fanout = (daemon.get("ratios") or {}).get("fanout_cpu_family3/otlp")
        if fanout is not None:
            out["3 OTLP-family exporters <= 1.5x the CPU of 1"] = _target(
                "<= 1.5", fanout, fanout <= 1.5, "daemon.ratios.fanout_cpu_family3/otlp")
        p99 = (daemon.get("latency") or {}).get("p99_ms")
        if p99 is not None:
            out["emit -> backend p99 <= 1.5 s at defaults"] = _target("<= 1500 ms", p99, p99 <= 1500,
                                                                     "daemon.latency.p99_ms")
    peer = result.get("peer")
    if peer and not peer.get("skipped"):
        ratio = peer.get("ratio_cpu_shipper_over_rotel")
        out["OTLP in -> OTLP out <= 1.5x Rotel CPU per span (forwarded as received, as Rotel does)"] = _target(
            "<= 1.5", ratio, None if ratio is None else ratio <= 1.5, "peer.ratio_cpu_shipper_over_rotel")
        converting = peer.get("ratio_cpu_converting_over_rotel")
        if converting is not None:
            out["OTLP in -> OTLP out, converted (conventions added), over Rotel: for information"] = _target(
                "none", converting, None, "peer.ratio_cpu_converting_over_rotel")
    soak = result.get("soak")
    if soak:
        t = soak["transports"]
        for kind in ("spool", "otlp"):
            lost = t[kind]["lost"]
            out[f"soak: 0 lost from {kind}"] = _target("0", lost, lost == 0, f"soak.transports.{kind}.lost")
        rss = soak["rss_peak_mb"]
        out["soak: peak RSS under MemoryMax (512 MiB)"] = _target("<= 512 MiB", rss, rss <= 512, "soak.rss_peak_mb")
    return out
