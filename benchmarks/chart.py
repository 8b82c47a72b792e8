"""An SVG chart, written by hand (no plotting dependency): the latest run's cost per option, and history.

Panel 1: p50 and CPU per span of each option in the latest run, log scale. Panel 2: the ratios the
targets are about, per run, in time order. Panel 3: daemon spans per CPU-second per run. History panels
use the runs of the same mode (full or quick) as the latest.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from benchmarks.report import LABELS, ordered

WIDTH = 860
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", weight: str = "normal",
          color: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{color}">{escape(s)}</text>')


def _line(x1: float, y1: float, x2: float, y2: float, color: str = "#ccc", width: float = 1.0, dash: str = "") -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" stroke-width="{width}"{extra}/>'


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _short(value: float) -> str:
    """12k, 1.5M, 0.5, 10: axis labels."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _cost_panel(result: dict[str, Any], top: float) -> tuple[list[str], float]:
    variants = ordered(result["span_cost"]["variants"])
    left, right, bar, gap = 250, WIDTH - 60, 9, 8
    values = [v[k] / 1000 for v in variants.values() for k in ("p50_ns", "cpu_ns") if v[k] > 0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))

    def x(us: float) -> float:
        return left + (math.log10(max(us, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (right - left)

    out = [_text(20, top + 16, f"Per-span cost in the app, commit {result['commit']['short']} "
                               f"({result['mode']} run, medians; microseconds, log scale)", 14, weight="bold")]
    y0 = top + 34
    height = len(variants) * (2 * bar + gap)
    decade = lo
    while decade <= hi * 1.0001:
        out.append(_line(x(decade), y0 - 4, x(decade), y0 + height, "#ddd"))
        out.append(_text(x(decade), y0 + height + 14, f"{decade:g}", 11, "middle", color="#555"))
        decade *= 10
    y = y0
    for name, v in variants.items():
        out.append(_text(left - 8, y + bar + 3, LABELS.get(name, name), 12, "end"))
        for i, (key, color) in enumerate((("p50_ns", COLORS[0]), ("cpu_ns", COLORS[1]))):
            us = v[key] / 1000
            out.append(f'<rect x="{left}" y="{y + i * bar:.1f}" width="{max(1.0, x(us) - left):.1f}" '
                       f'height="{bar - 1}" fill="{color}"/>')
            out.append(_text(x(us) + 4, y + i * bar + bar - 1, f"{us:.2f}", 10, color="#444"))
        y += 2 * bar + gap
    legend_y = y0 + height + 32
    for i, (label, color) in enumerate((("p50 latency", COLORS[0]), ("process CPU per span", COLORS[1]))):
        out.append(f'<rect x="{left + i * 180}" y="{legend_y - 9}" width="12" height="9" fill="{color}"/>')
        out.append(_text(left + i * 180 + 16, legend_y, label, 11))
    return out, legend_y + 16


def _history_panel(title: str, runs: list[dict[str, Any]], series: dict[str, list[float | None]], top: float,
                   log: bool, guides: dict[str, float]) -> tuple[list[str], float]:
    left, right, height = 80, WIDTH - 200, 180
    out = [_text(20, top + 16, title, 14, weight="bold")]
    y0, y1 = top + 30, top + 30 + height
    values = [v for s in series.values() for v in s if v] + list(guides.values())
    if not values:
        return [*out, _text(left, y0 + 20, "no data yet", 12)], y1 + 40
    lo, hi = min(values), max(values)
    if log:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        scale = lambda v: y1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo) or 1) * height  # noqa: E731
        ticks = [lo * 10 ** i for i in range(round(math.log10(hi / lo)) + 1)]
    else:
        step = _nice_step(hi / 4)
        lo, hi = 0.0, step * math.ceil(hi * 1.05 / step)
        scale = lambda v: y1 - (v - lo) / (hi - lo or 1) * height  # noqa: E731
        ticks = [step * i for i in range(round(hi / step) + 1)]
    for t in ticks:
        out.append(_line(left, scale(t), right, scale(t), "#e5e5e5"))
        out.append(_text(left - 6, scale(t) + 4, _short(t), 10, "end", color="#555"))
    n = len(runs)
    xs = [left + (right - left) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]
    for i, run in enumerate(runs):
        if n <= 12 or i % math.ceil(n / 12) == 0 or i == n - 1:
            out.append(_text(xs[i], y1 + 14, run["commit"]["short"][:7], 9, "middle", color="#555"))
    for label, value in guides.items():
        out.append(_line(left, scale(value), right, scale(value), "#999", 1, "4 3"))
        out.append(_text(left + 4, scale(value) - 4, label, 10, color="#777"))
    for k, (label, points) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        coords = [(xs[i], scale(v)) for i, v in enumerate(points) if v]
        if len(coords) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in coords)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        for px, py in coords:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>')
        out.append(f'<rect x="{right + 6}" y="{y0 + 16 * k}" width="12" height="9" fill="{color}"/>')
        out.append(_text(right + 22, y0 + 16 * k + 9, label, 11))
    return out, y1 + 36


def render(results: list[dict[str, Any]]) -> str:
    """The SVG for a list of results in time order (the last is the latest)."""
    latest = results[-1]
    runs = [r for r in results if r.get("mode") == latest.get("mode")]
    parts: list[str] = []
    y = 10.0
    if latest.get("span_cost"):
        panel, y = _cost_panel(latest, y)
        parts += panel

    def ratio(r: dict[str, Any], key: str) -> float | None:
        return (r.get("span_cost") or {}).get("ratios", {}).get(key)

    series = {"shipper.span / floor, p50": [ratio(r, "span_paced/floor_paced p50") for r in runs],
              "shipper.span / floor, CPU": [ratio(r, "span_paced/floor_paced cpu") for r in runs],
              "@traced / floor, CPU": [ratio(r, "traced_paced/floor_paced cpu") for r in runs],
              "OTel / shipper.span, CPU": [ratio(r, "otel_paced/span_paced cpu") for r in runs]}
    panel, y = _history_panel(f"History: ratios per run, paced variants ({latest.get('mode')} runs, log scale)", runs,
                              series, y + 10,
                              True, {"1.5x target": 1.5, "8x target": 8.0})
    parts += panel

    def rate(r: dict[str, Any], scenario: str) -> float | None:
        s = (r.get("daemon") or {}).get("scenarios", {}).get(scenario) or {}
        return s.get("spans_per_cpu_s")

    series = {name.replace("_", " -> ", 1).replace("_x3", " x3"): [rate(r, name) for r in runs]
              for name in ("socket_file", "socket_otlp", "spool_otlp", "socket_otlp_x3", "socket_file_defaults",
                           "socket_otlp_defaults", "socket_family3_defaults")}
    series["rotel (OTLP in -> out)"] = [(r.get("peer") or {}).get("variants", {}).get("rotel", {}).get("spans_per_cpu_s")
                                        for r in runs]
    series["shipper (OTLP in -> out)"] = [(r.get("peer") or {}).get("variants", {}).get("shipper", {})
                                          .get("spans_per_cpu_s") for r in runs]
    panel, y = _history_panel("History: daemon spans per CPU-second (log scale)", runs, series, y, True,
                              {"50k target": 50_000, "100k target": 100_000})
    parts += panel
    series = {"3 OTLP-family exporters / 1, CPU": [((r.get("daemon") or {}).get("ratios") or {})
                                                   .get("fanout_cpu_family3/otlp") for r in runs],
              "shipper / Rotel, CPU per span": [(r.get("peer") or {}).get("ratio_cpu_shipper_over_rotel")
                                                for r in runs]}
    panel, y = _history_panel("History: fan-out and peer ratios (log scale)", runs, series, y + 10, True,
                              {"1.5x target": 1.5})
    parts += panel

    def bus(r: dict[str, Any], encoding: str, side: str) -> float | None:
        s = (r.get("kafka") or {}).get("scenarios", {}).get(encoding) or {}
        return s.get(f"{side}_spans_per_cpu_s")

    if any(r.get("kafka") for r in runs):
        series = {f"{side}, {encoding}": [bus(r, encoding, side) for r in runs]
                  for encoding in ("otlp_proto", "record_v1") for side in ("edge", "gateway")}
        panel, y = _history_panel("History: edge -> Kafka -> gateway, spans per CPU-second of each side", runs,
                                  series, y, False, {})
        parts += panel
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0f}" viewBox="0 0 {WIDTH} {y:.0f}" '
            f'font-family="Helvetica, Arial, sans-serif">')
    return "\n".join([head, f'<rect width="{WIDTH}" height="{y:.0f}" fill="white"/>', *parts, "</svg>"]) + "\n"


def write(results: list[dict[str, Any]], path: Path) -> Path:
    """Render and write the chart."""
    path.write_text(render(results))
    return path
