"""Exporter batch size against daemon CPU: `python -m benchmarks.batch_size [--n N] [--rounds R]`.

The figures behind the exporters' `batch.max_spans` defaults (2048 for the HTTP exporters, 512 for the
others): socket -> otlp_http and socket -> file, both with the default processors, each with
`batch.max_spans` 512 and 2048 in alternating rounds (the machine's speed drifts between runs minutes
apart, so only figures of the same rounds compare). Spans per daemon CPU-second, every round and the
median; the daemon pinned, the load on the app CPU, as in `benchmarks run --parts daemon`.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from benchmarks.processes import APP_CPUS, Daemon, Sink
from benchmarks.throughput import DEFAULT_PROCESSORS, _run

SIZES = (512, 2048)


def measure(n: int, rounds: int) -> dict[str, dict[int, list[int]]]:
    """Spans per CPU-second per exporter and batch size, one figure per round."""
    out: dict[str, dict[int, list[int]]] = {"otlp_http": {s: [] for s in SIZES}, "file": {s: [] for s in SIZES}}
    sink = Sink(cpus=APP_CPUS)
    try:
        for i in range(rounds):
            for size in SIZES if i % 2 == 0 else tuple(reversed(SIZES)):
                for kind in out:
                    batch = {"batch": {"max_spans": size}}
                    exporters = ({"file": {"type": "file", **batch}} if kind == "file"
                                 else {"otlp": {"type": "otlp_http", "endpoint": sink.url, **batch}})
                    daemon = Daemon(exporters, {"processors": DEFAULT_PROCESSORS}).start()
                    try:
                        sink.reset()
                        spans = (lambda d=daemon: d.exported("file")) if kind == "file" else sink.spans
                        figure = _run(daemon, "socket", n, spans, n, 120)["spans_per_cpu_s"]
                    finally:
                        daemon.stop()
                    out[kind][size].append(int(figure or 0))
    finally:
        sink.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_size", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for kind, by_size in measure(args.n, args.rounds).items():
        for size, figures in by_size.items():
            print(f"socket -> {kind:9s} max_spans {size:5d}: median {statistics.median(figures):8.0f} "
                  f"spans/CPU-s  rounds {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
