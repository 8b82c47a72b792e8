"""What tracing adds to process exit: an app records N spans, notes the time, and exits; we see it go.

Exit time = when the parent's `wait4()` returns minus the monotonic time the app printed after its last
span (CLOCK_MONOTONIC is one clock for every process on Linux); exit CPU = the child's total CPU from
`wait4()`'s rusage minus the CPU it had used when it printed, which a busy machine disturbs far less.
Runs are interleaved; figures are medians per option, and `added_*` subtract the untraced baseline's
median from the same pass.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.machine import ROOT
from benchmarks.processes import ENV, Daemon, Sink, pin_app, short_dir
from benchmarks.span_cost import otel_available

# name: (option, where the spans go)
VARIANTS = {"none": ("none", "-"), "shipper_up": ("span", "up"), "shipper_down": ("span", "down"),
            "otel": ("otel", "sink")}


def _exit_ms(option: str, n: int, socket_path: str = "", spool: str = "", sink: str = "") -> tuple[float, float]:
    """(wall ms, CPU ms) from the app's last span to its end."""
    command = [sys.executable, "-m", "benchmarks.app", "exit", option, "--n", str(n),
               "--socket", socket_path, "--spool", spool, "--sink", sink]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT,
                            preexec_fn=pin_app)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    _, status, usage = os.wait4(proc.pid, 0)
    gone = time.monotonic_ns()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not line.strip():
        raise RuntimeError(f"benchmarks.app exit {option} failed ({proc.returncode}):\n{proc.stderr.read().decode()[-2000:]}")
    proc.stdout.close()
    proc.stderr.close()
    mark_ns, cpu_ns = (int(x) for x in line.split())
    return (gone - mark_ns) / 1e6, (usage.ru_utime + usage.ru_stime) * 1e3 - cpu_ns / 1e6


def measure(n: int, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every option `reps` times, interleaved: median exit time and what it adds over no tracing."""
    names = [name for name in VARIANTS if name != "otel" or otel_available()]
    daemon = Daemon({"file": {"type": "file"}}).start()
    sink = Sink() if "otel" in names else None
    down = short_dir("shx")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for rep in range(reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                option, where = VARIANTS[name]
                if where == "up":
                    times[name].append(_exit_ms(option, n, daemon.socket, daemon.spool))
                elif where == "down":
                    times[name].append(_exit_ms(option, n, str(down / "nobody.sock"), str(down / "spool")))
                elif where == "sink":
                    assert sink is not None
                    times[name].append(_exit_ms(option, n, sink=sink.url))
                else:
                    times[name].append(_exit_ms(option, n))
        log(f"  exit: {reps} repetitions done")
    finally:
        daemon.stop()
        if sink is not None:
            sink.stop()
        shutil.rmtree(down, ignore_errors=True)
    def median(name: str, i: int) -> float:
        return statistics.median(t[i] for t in times[name])

    variants = {name: {"exit_ms": round(median(name, 0), 3), "added_ms": round(median(name, 0) - median("none", 0), 3),
                       "exit_cpu_ms": round(median(name, 1), 3),
                       "added_cpu_ms": round(median(name, 1) - median("none", 1), 3),
                       "runs_ms": [round(t[0], 3) for t in times[name]],
                       "runs_cpu_ms": [round(t[1], 3) for t in times[name]]} for name in times}
    return {"n": n, "reps": reps, "variants": variants}
