"""Where the time goes: `python -m benchmarks.profile {client|daemon} [...]`, to explain a missed target.

`client OPTION`: cProfile over N spans of one option (span, traced, floor, otel) sent to a running daemon,
top functions by own time. `daemon SCENARIO`: py-spy (`pip install py-spy`) samples the daemon while
it moves N spans (socket -> file, -> OTLP sink, -> three OTLP-family exporters, OTLP/HTTP in -> OTLP, or the same
forwarded as received: `otlp_forward`); only
threads holding the GIL are sampled (`--gil`: a thread blocked in a syscall is not counted as busy); top
functions by own and by inclusive samples.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import ROOT, cpu_seconds
from benchmarks.processes import ENV, Daemon, Sink, pin_app, wait_for
from benchmarks.workload import recorder


def client(option: str, n: int, top: int) -> None:
    daemon = Daemon({"file": {"type": "file"}}).start()
    sink = Sink() if option == "otel" else None
    try:
        one, flush, _ = recorder(option, daemon.socket, daemon.spool, sink.url if sink else "")
        for _ in range(1000):
            one()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            one()
        flush()
        profile.disable()
    finally:
        daemon.stop()
        if sink is not None:
            sink.stop()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(f"{option}: {stats.total_calls / n:.1f} function calls per span (cProfile inflates times; read shares)")
    print(out.getvalue())


def daemon(scenario: str, n: int, top: int, defaults: bool = False, all_threads: bool = False) -> None:
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    from benchmarks.throughput import DEFAULT_PROCESSORS, _family, _loadgen

    sink = Sink()
    exporters = ({"file": {"type": "file"}} if scenario == "file" else _family(sink.url, 3) if scenario == "family3"
                 else {"otlp": {"type": "otlp_http", "endpoint": sink.url, "forward_otlp": scenario == "otlp_forward"}})
    receivers = ({"otlp": {"type": "otlp_http", "endpoint": "127.0.0.1:0"}} if scenario.startswith("otlp_")
                 else None)
    shipper = Daemon(exporters, {"processors": DEFAULT_PROCESSORS} if defaults else None, receivers).start()
    copies = 3 if scenario == "family3" else 1
    raw = Path(tempfile.mkdtemp(prefix="shp-prof-")) / "samples.txt"
    try:
        if scenario.startswith("otlp_"):
            port = shipper.status()["receivers"]["otlp"]["port"]
            gen = subprocess.Popen([sys.executable, "-m", "benchmarks.otlp_load", "--url",
                                    f"http://127.0.0.1:{port}/v1/traces", "--n", str(n)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=ENV, cwd=ROOT, preexec_fn=pin_app)
        else:
            gen = _loadgen(shipper, n)
        assert gen.stdout is not None and gen.stdin is not None
        gen.stdout.readline()
        spy = subprocess.Popen(["py-spy", "record", "-p", str(shipper.pid), "-o", str(raw), "-f", "raw", "-r", "250",
                                "--nonblocking", *([] if all_threads else ["--gil"])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        cpu0 = cpu_seconds(shipper.pid)
        gen.stdin.write(b"go\n")
        gen.stdin.flush()
        out = (lambda: shipper.exported("file")) if scenario == "file" else sink.spans
        wait_for(lambda: out() >= n * copies, 600, f"{n} spans out", interval=0.1)
        cpu = cpu_seconds(shipper.pid) - cpu0
        spy.send_signal(2)
        spy.wait(60)
        gen.wait(30)
    finally:
        shipper.stop()
        sink.stop()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    shutil.rmtree(raw.parent, ignore_errors=True)
    print(f"{scenario}{' (default processors)' if defaults else ''}: {n} spans, {n / cpu:,.0f} spans per daemon CPU-second ({cpu / n * 1e6:.1f} us/span)")
    for title, counter in (("own samples", own), ("inclusive samples", inclusive)):
        print(f"\n{title} ({total} in all)")
        for frame, count in counter.most_common(top):
            print(f"{count / total:6.1%}  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_client = sub.add_parser("client")
    p_client.add_argument("option", choices=("span", "traced", "floor", "otel"))
    p_client.add_argument("--n", type=int, default=20_000)
    p_daemon = sub.add_parser("daemon")
    p_daemon.add_argument("scenario", choices=("file", "otlp", "family3", "otlp_in", "otlp_forward"),
                          help="socket -> file, socket -> otlp_http, socket -> otlp_http+phoenix+langfuse, "
                               "OTLP/HTTP in -> otlp_http, the same forwarded as received")
    p_daemon.add_argument("--defaults", action="store_true", help="with the embedded default processors")
    p_daemon.add_argument("--all-threads", action="store_true",
                          help="sample every thread, not only the one holding the GIL (gzip, fsync, thread reads)")
    p_daemon.add_argument("--n", type=int, default=50_000)
    for p in (p_client, p_daemon):
        p.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.what == "client":
        client(args.option, args.n, args.top)
    else:
        daemon(args.scenario, args.n, args.top, args.defaults, args.all_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
