"""Benchmarks of shipper against the alternatives: `python -m benchmarks run [--quick]`, `compare`, `chart`.

Parts, each in its own module: `span_cost` (what a span costs the app, per tracing option), `exit_cost`
(what tracing adds to process exit), `throughput` (the daemon's spans per second and per CPU-second, and
emit-to-backend latency), `outage` (the daemon's memory through a backend outage). Every measured app runs
in a fresh subprocess (`benchmarks.app`); the OTLP sink runs in its own process (`benchmarks.sink`).
Results are JSON files under `benchmarks/results/` (`results.py`); `chart.py` draws them as SVG.
"""
