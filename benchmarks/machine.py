"""What a result was measured on and with: machine, commit, package versions; /proc readers for a pid."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shipper", "orjson", "anyio", "httpx", "protobuf", "opentelemetry-sdk",
            "opentelemetry-exporter-otlp-proto-http", "opentelemetry-proto")
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the (shared) machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """CPU model, cores, Python, kernel, and the load when asked."""
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def commit() -> dict[str, Any]:
    """The checkout's commit: sha, short sha, subject, and whether files the benchmarks run were changed."""
    sha = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "shipper", "benchmarks")
    return {"sha": sha, "short": sha[:8] or "nogit", "subject": _git("log", "-1", "--format=%s"),
            "dirty": bool(dirty)}


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter to the figures (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds (/proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process in bytes (/proc/<pid>/statm)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
