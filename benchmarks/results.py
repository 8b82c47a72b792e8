"""Result files: written, listed, loaded, flattened to comparable figures, and compared as ratios.

A result is one JSON file, `<results dir>/<UTC timestamp>-<short commit>.json`, holding `schema` (1),
`mode` (full or quick), `started_at`, `duration_s`, `commit`, `machine`, `versions`, `settings`, and one
key per part measured (`span_cost`, `exit`, `daemon`, `outage`, `kafka`, `peer`, `soak` when asked for) plus `targets`. Files are never
rewritten; names sort in time order.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = 1
# Smallest noise bar per kind of figure, whatever the threshold: a tail percentile of one run moves a lot.
MIN_NOISE = {"p99_ns": 0.5, "p999_ns": 1.0, "p99/floor": 0.5, "exit_ms": 0.25, "latency": 0.5}


def save(result: dict[str, Any], directory: Path) -> Path:
    """Write `result` under `directory` with a name from its start time and commit."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"].replace("-", "").replace(":", "")[:15]  # 20261121T102455
    path = directory / f"{stamp}-{result['commit']['short']}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return path


def listing(directory: Path, mode: str | None = None) -> list[Path]:
    """Result files in time order, only those of `mode` when given."""
    files = sorted(directory.glob("*.json"))
    return [f for f in files if mode is None or load(f).get("mode") == mode]


def load(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes())


# (value, which way is better: 'lower' or 'higher', relative spread of its repetitions or None)
Figure = tuple[float, str, float | None]


def _spread(values: list[float]) -> float | None:
    """Relative spread of repetitions, (max - min) / median: how noisy the figure was in its run."""
    if len(values) < 2:
        return None
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else None


def figures(result: dict[str, Any]) -> dict[str, Figure]:
    """The comparable figures of a result: value, 'lower' or 'higher' is better, and noise."""
    out: dict[str, Figure] = {}
    cost = result.get("span_cost")
    if cost:
        for name, v in cost["variants"].items():
            for key in ("p50_ns", "p99_ns", "cpu_ns"):
                out[f"span_cost.{name}.{key}"] = (v[key], "lower", _spread([r[key] for r in v.get("runs", [])]))
        for name, value in cost["ratios"].items():
            if value is not None:
                out[f"span_cost.ratio.{name}"] = (value, "higher" if name.startswith("otel") else "lower", None)
    exits = result.get("exit")
    if exits:
        for name, v in exits["variants"].items():
            out[f"exit.{name}.exit_ms"] = (v["exit_ms"], "lower", _spread(v.get("runs_ms", [])))
    daemon = result.get("daemon")
    if daemon:
        for name, s in daemon["scenarios"].items():
            out[f"daemon.{name}.spans_per_s"] = (s["spans_per_s"], "higher", None)
            if s.get("spans_per_cpu_s"):
                out[f"daemon.{name}.spans_per_cpu_s"] = (s["spans_per_cpu_s"], "higher", None)
        for part in ("latency", "latency_short_batches"):
            for key in ("p50_ms", "p99_ms"):
                if (daemon.get(part) or {}).get(key):
                    out[f"daemon.{part}.{key}"] = (daemon[part][key], "lower", None)
        for name, value in (daemon.get("ratios") or {}).items():
            out[f"daemon.ratio.{name}"] = (value, "lower", None)
    peer = result.get("peer")
    if peer and not peer.get("skipped"):
        for name, v in peer["variants"].items():
            spread = _spread([r["us_per_span"] for r in v.get("runs", [])])
            out[f"peer.{name}.us_per_span"] = (v["us_per_span"], "lower", spread)
            out[f"peer.{name}.bytes_out_per_span"] = (v["bytes_out_per_span"], "lower", None)
        if peer.get("ratio_cpu_shipper_over_rotel"):
            out["peer.ratio.shipper/rotel cpu"] = (peer["ratio_cpu_shipper_over_rotel"], "lower", None)
    bus = result.get("kafka")
    if bus:
        for name, s in bus["scenarios"].items():
            for side in ("edge", "gateway"):
                if s.get(f"{side}_spans_per_cpu_s"):
                    out[f"kafka.{name}.{side}_spans_per_cpu_s"] = (s[f"{side}_spans_per_cpu_s"], "higher", None)
        for key in ("p50_ms", "p99_ms"):
            if (bus.get("latency") or {}).get(key):
                out[f"kafka.latency.{key}"] = (bus["latency"][key], "lower", None)
    outage = result.get("outage")
    if outage:
        out["outage.rss_max_mb"] = (outage["rss_max_mb"], "lower", None)
        out["outage.drain_s"] = (outage["drain_s"], "lower", None)
    soak = result.get("soak")
    if soak:
        out["soak.rss_peak_mb"] = (soak["rss_peak_mb"], "lower", None)
    return out


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float) -> list[dict[str, Any]]:
    """new / old for every figure both have; a regression is a change for the worse beyond the noise.

    The noise bar of a figure is the larger of `threshold` and the spread of its repetitions in either run.
    """
    a, b = figures(old), figures(new)
    rows = []
    for name in a.keys() & b.keys():
        (before, better, noise_a), (after, _, noise_b) = a[name], b[name]
        if not before:
            continue
        ratio = after / before
        floor = max([v for k, v in MIN_NOISE.items() if k in name] or [0.0])
        bar = max([threshold, floor, *(n for n in (noise_a, noise_b) if n is not None)])
        worse = ratio - 1 if better == "lower" else (1 / ratio - 1 if ratio else float("inf"))
        rows.append({"figure": name, "ratio": round(ratio, 3), "better": better, "noise": round(bar, 3),
                     "regression": worse > bar, "improvement": -worse > bar})
    rows.sort(key=lambda r: r["figure"])
    for name in ("span_cost", "outage"):
        lost_old = _lost(old, name)
        lost_new = _lost(new, name)
        if lost_new and not lost_old:
            rows.append({"figure": f"{name}.lost", "ratio": None, "better": "lower", "noise": 0.0,
                         "regression": True, "improvement": False, "note": f"{lost_new} spans lost, none before"})
    return rows


def _lost(result: dict[str, Any], part: str) -> int:
    data = result.get(part)
    if not data:
        return 0
    if part == "span_cost":
        return sum(v["lost"] for name, v in data["variants"].items() if name.startswith(("span", "traced")))
    return int(data.get("lost", 0))
