"""`python -m benchmarks run [--quick]` measures and writes a result; `compare [A B]` and `chart` read them."""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import chart, report, results, targets
from benchmarks.machine import commit, load_average, machine, versions
from benchmarks.processes import APP_CPUS, SERVICE_CPUS
from benchmarks.progress import BenchProgress

PARTS = ("span", "exit", "daemon", "outage", "kafka", "peer")
OPTIONAL_PARTS = ("soak",)  # only when asked for with --parts: ten minutes of its own
SETTINGS = {
    "full": {"span": {"n": 20_000, "warmup": 2_000, "reps": 5, "settle": 60.0},
             "exit": {"n": 1_000, "reps": 9},
             "daemon": {"n": 100_000, "latency_n": 3_000, "latency_rate": 1_000.0, "timeout": 300.0},
             "outage": {"seconds": 300.0, "rate": 500.0, "sample_every": 5.0},
             "kafka": {"n": 50_000, "latency_n": 2_000, "latency_rate": 200.0, "timeout": 300.0},
             "peer": {"n": 102_400, "rounds": 3, "timeout": 300.0},
             "soak": {"seconds": 600.0, "kill_every": 60.0}},
    "quick": {"span": {"n": 300, "warmup": 100, "reps": 1, "settle": 20.0},
              "exit": {"n": 100, "reps": 1},
              "daemon": {"n": 1_000, "latency_n": 100, "latency_rate": 200.0, "timeout": 60.0},
              "outage": {"seconds": 3.0, "rate": 200.0, "sample_every": 1.0},
              "kafka": {"n": 1_000, "latency_n": 100, "latency_rate": 100.0, "timeout": 60.0},
              "peer": {"n": 2_048, "rounds": 1, "timeout": 60.0},
              "soak": {"seconds": 20.0, "kill_every": 10.0}},
}


_progress: BenchProgress | None = None


def _log(message: str) -> None:
    if _progress is not None:
        _progress.log(message)
    else:
        print(message, file=sys.stderr, flush=True)


def run(mode: str, parts: list[str], out: Path, draw: bool, overrides: dict[str, dict[str, Any]] | None = None) -> int:
    """Measure the parts, write the result file (and the chart), print the tables; 1 if a part failed."""
    from benchmarks import exit_cost, kafka, outage, peer, soak, span_cost, throughput

    global _progress
    settings = {part: {**values, **(overrides or {}).get(part, {})} for part, values in SETTINGS[mode].items()}
    _progress = BenchProgress(parts, mode, out)
    # SIGTERM unwinds like Ctrl-C, so the daemons and sinks of the part being measured are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    result: dict[str, Any] = {
        "schema": results.SCHEMA, "mode": mode,
        "started_at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(), "machine": machine(), "versions": versions(),
        "settings": {**{part: settings[part] for part in parts},
                     "cpus": {"app": sorted(APP_CPUS), "daemon_and_sink": sorted(SERVICE_CPUS)}},
        "errors": {},
    }
    steps = {
        "span": ("span_cost", lambda s: span_cost.measure(s["n"], s["warmup"], s["reps"], s["settle"], _log)),
        "exit": ("exit", lambda s: exit_cost.measure(s["n"], s["reps"], _log)),
        "daemon": ("daemon", lambda s: throughput.measure(s["n"], s["latency_n"], s["latency_rate"], s["timeout"], _log)),
        "outage": ("outage", lambda s: outage.measure(s["seconds"], s["rate"], s["sample_every"], _log)),
        "kafka": ("kafka", lambda s: kafka.measure(s["n"], s["latency_n"], s["latency_rate"], s["timeout"], _log)),
        "peer": ("peer", lambda s: peer.measure(s["n"], s["rounds"], s["timeout"], _log)),
        "soak": ("soak", lambda s: soak.measure(s["seconds"], s["kill_every"], _log)),
    }
    for part in parts:
        key, measure = steps[part]
        _progress.begin(part)
        _log(f"{part}: measuring ({mode})")
        try:
            result[key] = measure(settings[part])
        except Exception as exc:  # one broken part must not lose the others' figures
            result["errors"][part] = f"{type(exc).__name__}: {exc}"
            _log(f"{part}: failed: {exc}\n{traceback.format_exc()}")
    result["part_durations_s"] = _progress.finish()
    _progress = None
    result["targets"] = targets.evaluate(result)
    result["duration_s"] = round(time.time() - started, 1)
    result["load_average_end"] = load_average()
    path = results.save(result, out)
    print(report.render(result))
    print(f"\nWrote {path}")
    previous = [p for p in results.listing(out, mode) if p != path]
    if previous:
        rows = results.compare(results.load(previous[-1]), result, 0.25)
        print("\n" + report.render_comparison(previous[-1].name, path.name, rows, flagged_only=True))
    charted = [r for r in (results.load(p) for p in results.listing(out)) if r.get("span_cost")]
    if draw and charted:  # the chart is of per-span costs: a soak-only run has none
        print(f"Chart: {chart.write(charted, out / 'chart.svg')}")
    return 1 if result["errors"] else 0


def compare(files: list[str], directory: Path, threshold: float) -> int:
    """Print new/old ratios of two results (default: the last two of the latest's mode); 1 on regressions."""
    if files:
        if len(files) != 2:
            print("compare takes two result files (old new), or none for the last two.", file=sys.stderr)
            return 2
        old_path, new_path = (Path(f) for f in files)
    else:
        everything = results.listing(directory)
        if not everything:
            print(f"No results in {directory}: run `python -m benchmarks run` first.", file=sys.stderr)
            return 1
        same = results.listing(directory, results.load(everything[-1]).get("mode"))
        if len(same) < 2:
            print(f"Only one {results.load(everything[-1]).get('mode')} result in {directory}: nothing to compare.",
                  file=sys.stderr)
            return 1
        old_path, new_path = same[-2], same[-1]
    old, new = results.load(old_path), results.load(new_path)
    if old.get("mode") != new.get("mode"):
        print(f"Note: comparing a {old.get('mode')} run with a {new.get('mode')} run; figures differ in size.")
    rows = results.compare(old, new, threshold)
    print(report.render_comparison(old_path.name, new_path.name, rows))
    return 1 if any(r["regression"] for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="measure, print the tables, write a result file and the chart")
    p_run.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (tiny figures, noisy)")
    p_run.add_argument("--out", type=Path, default=results.RESULTS, help="results directory (default: %(default)s)")
    p_run.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS)
                       + f" (default), and {', '.join(OPTIONAL_PARTS)} (mixed load with kill -9, 10 minutes)")
    p_run.add_argument("--soak-seconds", type=float, help="how long the soak part runs (default 600, quick 20)")
    p_run.add_argument("--soak-kill-every", type=float, help="seconds between the soak's kill -9s (default 60)")
    p_run.add_argument("--no-chart", action="store_true", help="do not rewrite chart.svg")
    p_cmp = sub.add_parser("compare", help="new/old ratios of two results (default: the last two), regressions flagged")
    p_cmp.add_argument("files", nargs="*", help="OLD NEW result files")
    p_cmp.add_argument("--dir", type=Path, default=results.RESULTS)
    p_cmp.add_argument("--threshold", type=float, default=0.25,
                       help="smallest change counted as a regression, beyond the runs' own spread (default 0.25)")
    p_chart = sub.add_parser("chart", help="redraw chart.svg from the result files")
    p_chart.add_argument("--dir", type=Path, default=results.RESULTS)
    args = parser.parse_args(argv)
    if args.command == "run":
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        unknown = set(parts) - set(PARTS) - set(OPTIONAL_PARTS)
        if unknown:
            parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(PARTS + OPTIONAL_PARTS)}")
        soak = {key: value for key, value in (("seconds", args.soak_seconds), ("kill_every", args.soak_kill_every))
                if value is not None}
        return run("quick" if args.quick else "full", parts, args.out, not args.no_chart, {"soak": soak})
    if args.command == "compare":
        return compare(args.files, args.dir, args.threshold)
    files = results.listing(args.dir)
    if not files:
        print(f"No results in {args.dir}.", file=sys.stderr)
        return 1
    print(chart.write([results.load(p) for p in files], args.dir / "chart.svg"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
