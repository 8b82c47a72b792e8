"""The measured app, one fresh process per run: `python -m benchmarks.app {cost|exit} OPTION [...]`.

`cost`: record `--warmup` spans, then `--n` spans in a tight loop (or paced at `--rate` per second, in
bursts of 1,000 with the sleeps outside the timed part), each timed with perf_counter_ns; the process CPU
(all threads) is taken over the loop and the final flush; prints one JSON line of figures.
`exit`: record `--n` spans, print the monotonic clock (ns, comparable across processes on Linux) and the
process CPU so far, exit the way the app would (atexit handlers run: the OpenTelemetry SDK flushes
there); the parent notes when the process is gone.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from benchmarks.workload import OPTIONS, recorder

# Paced runs sleep once per BURST spans, so a sleep's own CPU is not charged to one span, and the first span
# after a sleep (cold caches: 10-20x the p50, for the floor too) is 0.1% of the samples, below the p99.
BURST = 1000


def _percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cost(option: str, n: int, warmup: int, socket_path: str, spool_dir: str, sink_url: str, rate: float = 0.0) -> dict:
    """Figures of `n` spans recorded after `warmup` ones: in a tight loop, or `rate` spans per second."""
    one, flush, info = recorder(option, socket_path, spool_dir, sink_url)
    pc, cpu = time.perf_counter_ns, time.process_time_ns
    gap = int(1e9 / rate) if rate else 0
    sleep = time.sleep
    start = pc()
    for i in range(warmup):
        one()
        if gap and i % BURST == BURST - 1 and (ahead := start + (i + 1) * gap - pc()) > 0:
            sleep(ahead / 1e9)
    lat = [0] * n
    cpu0, wall0 = cpu(), pc()
    for i in range(n):
        t0 = pc()
        one()
        t1 = pc()
        lat[i] = t1 - t0
        if gap and i % BURST == BURST - 1 and (ahead := wall0 + (i + 1) * gap - t1) > 0:
            sleep(ahead / 1e9)  # paced: bursts of BURST spans, the sleep outside the timed part
    flush()
    cpu1, wall1 = cpu(), pc()
    lat.sort()
    return {"option": option, "n": n, "warmup": warmup, "emitted": n + warmup, "rate": rate,
            "p50_ns": _percentile(lat, 0.50), "p99_ns": _percentile(lat, 0.99),
            "p999_ns": _percentile(lat, 0.999), "max_ns": lat[-1], "mean_ns": sum(lat) / n,
            "cpu_ns": (cpu1 - cpu0) / n, "wall_ns": (wall1 - wall0) / n, "info": info()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app")
    parser.add_argument("what", choices=("cost", "exit"))
    parser.add_argument("option", choices=OPTIONS)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--socket", default="")
    parser.add_argument("--spool", default="")
    parser.add_argument("--sink", default="")
    parser.add_argument("--rate", type=float, default=0.0, help="spans per second (default: a tight loop)")
    args = parser.parse_args(argv)
    if args.what == "cost":
        figures = cost(args.option, args.n, args.warmup, args.socket, args.spool, args.sink, args.rate)
        sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
        sys.stdout.flush()
        return 0
    one, _, _ = recorder(args.option, args.socket, args.spool, args.sink)
    for _ in range(args.n):
        one()
    sys.stdout.write(f"{time.monotonic_ns()} {time.process_time_ns()}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
