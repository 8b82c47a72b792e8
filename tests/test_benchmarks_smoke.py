"""The benchmarks run end to end in their quick mode and produce a complete result (no timing assertions)."""

from __future__ import annotations

import copy
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_run() -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """One `python -m benchmarks run --quick` into a temporary directory (never benchmarks/results)."""
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as out:
        yield Path(out), _run("run", "--quick", "--out", out)


def _result(out: Path) -> dict:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    return orjson.loads(files[0].read_bytes())


def test_quick_run_writes_a_result_with_every_part(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """`run --quick` exits 0 and writes <timestamp>-<commit>.json with machine, commit, versions and every part."""
    out, done = quick_run
    assert done.returncode == 0, done.stdout + done.stderr
    result = _result(out)
    assert result["errors"] == {}
    assert result["mode"] == "quick"
    assert {"cpu_model", "cores", "python"} <= result["machine"].keys()
    assert result["commit"]["sha"] and result["versions"]["shipper"]
    variants = result["span_cost"]["variants"]
    assert {"none", "floor", "span_up", "traced_up", "span_down", "traced_down", "span_deaf", "traced_deaf"} <= variants.keys()
    for figures in variants.values():
        assert {"p50_ns", "p99_ns", "mean_ns", "cpu_ns", "emitted", "reached", "lost"} <= figures.keys()
    assert "span_up/floor p50" in result["span_cost"]["ratios"]
    assert {"none", "shipper_up", "shipper_down"} <= result["exit"]["variants"].keys()
    scenarios = result["daemon"]["scenarios"]
    assert set(scenarios) == {"socket_file", "socket_otlp", "socket_otlp_x3", "spool_otlp", "spool_otlp_x3",
                              "socket_file_defaults", "socket_otlp_defaults", "socket_family3_defaults"}
    for figures in scenarios.values():
        assert {"spans_per_s", "cpu_s_per_100k", "spans_per_cpu_s"} <= figures.keys()
    assert "fanout_cpu_family3/otlp" in result["daemon"]["ratios"]
    assert {"span_default", "traced_default", "floor_default"} <= variants.keys()
    peer = result["peer"]  # OTLP in -> out beside Rotel, or skipped where the bench extra is not installed
    if not peer.get("skipped"):
        # A quick run's 2,048 spans can cost Rotel, or shipper forwarding, less than one clock tick (0 CPU,
        # so no ratio): the keys are checked, and the CPU of shipper converting, which is never that small.
        assert {"shipper", "rotel", "shipper_converting"} <= peer["variants"].keys()
        assert {"ratio_cpu_shipper_over_rotel", "ratio_cpu_converting_over_rotel"} <= peer.keys()
        assert peer["variants"]["shipper_converting"]["us_per_span"] > 0
        for figures in peer["variants"].values():
            assert {"us_per_span", "bytes_out_per_span", "bytes_in_per_span", "runs"} <= figures.keys()
    assert {"p50_ms", "p99_ms"} <= result["daemon"]["latency"].keys()
    assert {"rss_start_mb", "rss_max_mb", "backlog_mb", "drain_s", "lost"} <= result["outage"].keys()
    for figures in result["kafka"]["scenarios"].values():
        assert {"spans_per_s", "edge_spans_per_cpu_s", "gateway_spans_per_cpu_s"} <= figures.keys()
    assert {"p50_ms", "p99_ms"} <= result["kafka"]["latency"].keys()
    assert result["targets"]
    assert "Per-span cost in the app" in done.stdout and "Targets" in done.stdout
    ElementTree.parse(out / "chart.svg")  # well-formed SVG


def test_compare_flags_a_regression_beyond_the_noise(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """`compare OLD NEW` prints new/old ratios and exits 1 when a figure got worse beyond the noise bar."""
    out, _ = quick_run
    old = _result(out)
    new = copy.deepcopy(old)
    new["span_cost"]["variants"]["span_up"]["cpu_ns"] *= 3
    with tempfile.TemporaryDirectory(prefix="shipper-cmp-") as scratch:
        old_path, new_path = Path(scratch, "a.json"), Path(scratch, "b.json")
        old_path.write_bytes(orjson.dumps(old))
        new_path.write_bytes(orjson.dumps(new))
        same = _run("compare", str(old_path), str(old_path))
        worse = _run("compare", str(old_path), str(new_path))
    assert same.returncode == 0, same.stdout + same.stderr
    assert worse.returncode == 1, worse.stdout + worse.stderr
    line = next(row for row in worse.stdout.splitlines() if row.startswith("span_cost.span_up.cpu_ns"))
    assert "3.000" in line and "REGRESSION" in line


def test_soak_smoke_run_counts_every_span_per_transport() -> None:
    """`run --quick --parts soak`: 20 s of mixed load with one kill -9 and a flapping backend; per transport
    the counters add up (delivered + lost == sent + spooled), the spool loses nothing, and the result JSON
    holds the figures and the soak targets."""
    with tempfile.TemporaryDirectory(prefix="shipper-soak-") as out:
        done = _run("run", "--quick", "--parts", "soak", "--out", out, "--no-chart", timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        result = _result(Path(out))
    soak = result["soak"]
    assert result["errors"] == {} and soak["kills"] >= 1
    assert set(soak["transports"]) == {"socket1", "socketN", "spool", "otlp"}
    for kind, t in soak["transports"].items():
        assert t["emitted"] > 0 and t["delivered"] > 0, (kind, t)
        assert t["delivered"] + t["lost"] == t["sent"] + t["spooled"], (kind, t)
        assert t["sent"] + t["spooled"] + t["client_dropped"] + t["unsent"] == t["emitted"], (kind, t)
    assert soak["transports"]["spool"]["lost"] == 0
    assert soak["backend_replies"].get("ok", 0) > 0 and len(soak["backend_replies"]) >= 2
    assert 0 < soak["rss_peak_mb"] < 512
    assert {"soak: 0 lost from spool", "soak: 0 lost from otlp"} <= result["targets"].keys()
    assert "Soak:" in done.stdout


def test_stage_cost_and_loop_stall_run_and_report_every_figure() -> None:
    """The two standalone measurements the closing notes cite run on their own, small (no timing asserted)."""
    stages = subprocess.run([sys.executable, "-m", "benchmarks.stage_cost", "--n", "2048", "--repeat", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert stages.returncode == 0, stages.stderr
    assert all(label in stages.stdout for label in ("decode_payload", "redact", "encode phoenix", "gzip level 1",
                                                    "socket -> otlp_http, stages", "three OTLP exporters"))
    stall = subprocess.run([sys.executable, "-m", "benchmarks.loop_stall", "--spans", "20000", "--rounds", "1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert stall.returncode == 0, stall.stderr
    assert "longest status answer, request in flight" in stall.stdout and "20000 spans" in stall.stdout
