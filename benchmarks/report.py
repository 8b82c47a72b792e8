"""Plain-text tables of a result and of a comparison, as `run` and `compare` print them."""

from __future__ import annotations

from typing import Any

ORDER = ("none", "floor", "span_up", "traced_up", "span_down", "traced_down", "span_deaf", "traced_deaf", "otel",
         "floor_paced", "span_paced", "traced_paced", "otel_paced", "floor_default", "span_default", "traced_default",
         "shipper_up", "shipper_down")
LABELS = {
    "none": "no tracing", "floor": "raw floor (dict+orjson+send)", "span_up": "shipper.span, daemon up",
    "traced_up": "@traced, daemon up", "span_down": "shipper.span, daemon down", "traced_down": "@traced, daemon down",
    "span_deaf": "shipper.span, deaf receiver", "traced_deaf": "@traced, deaf receiver",
    "otel": "OpenTelemetry SDK, batch+OTLP/HTTP", "floor_paced": "raw floor, 5k/s",
    "span_paced": "shipper.span, daemon up, 5k/s", "traced_paced": "@traced, daemon up, 5k/s",
    "otel_paced": "OpenTelemetry SDK, 5k/s", "shipper_up": "shipper, daemon up",
    "shipper_down": "shipper, daemon down",
    "floor_default": "raw floor, default-config daemon", "span_default": "shipper.span, default-config daemon",
    "traced_default": "@traced, default-config daemon",
}


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[("" if c is None else str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ordered(variants: dict[str, Any]) -> dict[str, Any]:
    """Variants in the order of ORDER (result files store keys sorted), unknown ones last."""
    return {name: variants[name] for name in [*ORDER, *sorted(variants.keys() - set(ORDER))] if name in variants}


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f}"


def render(result: dict[str, Any]) -> str:
    """Every part of a result as tables, then the targets."""
    out = [f"shipper benchmarks ({result['mode']}), commit {result['commit']['short']}"
           f"{' (dirty)' if result['commit'].get('dirty') else ''}, {result['machine']['cpu_model']}, "
           f"{result['machine']['cores']} cores, Python {result['machine']['python']}, "
           f"load {result['machine'].get('load_average')} -> {result.get('load_average_end')}"]
    cpus = result.get("settings", {}).get("cpus")
    if cpus:
        out.append(f"Pinned: measured apps and load generators on CPU {cpus['app']}, daemons on {cpus['daemon_and_sink']}.")
    cost = result.get("span_cost")
    if cost:
        out.append(f"\nPer-span cost in the app ({cost['n']} spans x {cost['reps']} runs, medians; microseconds; "
                   f"a tight loop unless marked {cost.get('paced_rate', 0) / 1000:g}k/s)")
        rows = [[LABELS.get(name, name), _us(v["p50_ns"]), _us(v["p99_ns"]), _us(v["mean_ns"]), _us(v["cpu_ns"]),
                 v["spooled"], f"{v['lost']}/{v['emitted']}"] for name, v in ordered(cost["variants"]).items()]
        out.append(_table(["option", "p50", "p99", "mean", "CPU/span", "spooled", "lost/emitted"], rows))
        shown = ("span_up", "traced_up", "otel", "span_paced", "traced_paced", "floor_paced")
        out.append("\nRatios: " + ", ".join(f"{k} {v}" for k, v in cost["ratios"].items()
                                            if v is not None and k.startswith(shown)))
    exits = result.get("exit")
    if exits:
        out.append(f"\nProcess exit after {exits['n']} spans ({exits['reps']} runs, medians; milliseconds)")
        rows = [[LABELS.get(name, name), f"{v['exit_ms']:.1f}", f"{v['added_ms']:+.1f}", f"{v['exit_cpu_ms']:.1f}",
                 f"{v['added_cpu_ms']:+.1f}"]
                for name, v in ordered(exits["variants"]).items()]
        out.append(_table(["option", "exit", "added", "exit CPU", "added CPU"], rows))
    daemon = result.get("daemon")
    if daemon:
        out.append(f"\nDaemon throughput ({daemon['n']} spans per scenario; {daemon['settings']})")
        rows = [[name.replace("_", " -> ", 1).replace("_x3", " x3"), s["spans_per_s"], s["daemon_cpu_s"],
                 s["cpu_s_per_100k"], s["spans_per_cpu_s"]] for name, s in daemon["scenarios"].items()]
        out.append(_table(["scenario", "spans/s", "daemon CPU-s", "CPU-s/100k", "spans/CPU-s"], rows))
        for key, how in (("latency", "default batching"), ("latency_short_batches", "batch delays 20ms")):
            lat = daemon.get(key)
            if lat:
                out.append(f"Emit-to-backend latency, socket -> OTLP, {how}, {lat['spans']} spans at "
                           f"{lat['rate_per_s']:.0f}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
        for name, value in (daemon.get("ratios") or {}).items():
            out.append(f"Ratio {name}: {value}")
    peer = result.get("peer")
    if peer and peer.get("skipped"):
        out.append(f"\nOTLP in -> out beside Rotel: skipped ({peer['skipped']})")
    elif peer:
        out.append(f"\nOTLP/HTTP in -> OTLP/HTTP out beside Rotel ({peer['n']} spans, median of {peer['rounds']} "
                   f"interleaved rounds; {peer['settings']})")
        rows = [[name, v["us_per_span"], v["spans_per_cpu_s"], v["bytes_in_per_span"], v["bytes_out_per_span"],
                 v["rss_max_mb"]] for name, v in peer["variants"].items()]
        out.append(_table(["collector", "us CPU/span", "spans/CPU-s", "B in/span", "B out/span", "RSS MiB"], rows))
        out.append(f"shipper / Rotel CPU per span: {peer['ratio_cpu_shipper_over_rotel']} (forwarded as received); "
                   f"{peer.get('ratio_cpu_converting_over_rotel')} (converted, conventions added)")
    bus = result.get("kafka")
    if bus:
        out.append(f"\nEdge -> Kafka -> gateway ({bus['n']} spans per encoding; {bus['settings']})")
        rows = [[name, s["spans_per_s"], s["edge_spans_per_cpu_s"], s["gateway_spans_per_cpu_s"],
                 s["broker_spans_per_cpu_s"], s["kafka_messages"]] for name, s in bus["scenarios"].items()]
        out.append(_table(["encoding", "spans/s", "edge spans/CPU-s", "gateway spans/CPU-s", "broker spans/CPU-s",
                           "messages"], rows))
        lat = bus.get("latency")
        if lat:
            out.append(f"Emit-to-backend latency across the bus, batch delays 20ms, {lat['spans']} spans at "
                       f"{lat['rate_per_s']:.0f}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
    outage = result.get("outage")
    if outage:
        out.append(f"\nBackend outage: {outage['outage_s']} s at {outage['rate_per_s']:.0f} spans/s, "
                   f"{outage['backlog_mb']} MiB queued on disk; daemon RSS {outage['rss_start_mb']} MiB at start, "
                   f"{outage['rss_max_mb']} MiB max, {outage['rss_end_mb']} MiB after; drained in "
                   f"{outage['drain_s']} s, {outage['lost']} of {outage['spans']} lost")
    soak = result.get("soak")
    if soak:
        out.append(f"\nSoak: {soak['seconds']} s of mixed load, kill -9 every {soak['kill_every_s']:g} s "
                   f"({soak['kills']} kills), backend flapping {'/'.join(m for m, _ in soak['schedule'])}; "
                   f"peak daemon RSS {soak['rss_peak_mb']} MiB, drained in {soak['drain_s']} s")
        rows = [[kind, t["emitted"], t["sent"], t["spooled"], t["delivered"], t["duplicated"], t["lost"]]
                for kind, t in soak["transports"].items()]
        out.append(_table(["transport", "emitted", "sent", "spooled", "delivered", "duplicated", "lost"], rows))
        out.append(f"Socket loss per kill: {soak['socket_lost_per_kill']}; daemon drops: {soak['daemon_dropped'] or 'none'}")
    targets = result.get("targets")
    if targets:
        out.append("\nTargets")
        rows = [[name, t["goal"], t["value"], {True: "met", False: "MISSED", None: "-"}[t["met"]]]
                for name, t in targets.items()]
        out.append(_table(["target", "goal", "value", ""], rows))
    return "\n".join(out)


def render_comparison(old: str, new: str, rows: list[dict[str, Any]], flagged_only: bool = False) -> str:
    """new/old per figure; regressions and improvements marked (only those with `flagged_only`)."""
    shown = [r for r in rows if r["regression"] or r["improvement"]] if flagged_only else rows
    table = [[r["figure"], "" if r["ratio"] is None else f"{r['ratio']:.3f}", r["better"], f"±{r['noise']:.0%}",
              "REGRESSION" if r["regression"] else "better" if r["improvement"] else "", r.get("note", "")]
             for r in shown]
    regressions = sum(r["regression"] for r in rows)
    head = f"{new} against {old}: new/old ratios ({regressions} regression(s) beyond the noise)"
    if flagged_only:
        head += "; changes beyond the noise only (`python -m benchmarks compare` shows every figure)"
    if not shown:
        return head
    return head + "\n" + _table(["figure", "new/old", "better", "noise", "", ""], table)
