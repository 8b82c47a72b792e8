"""Long work shows progress on a terminal (a real pty) and stays quiet and line-oriented otherwise."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from shipper.testing import make_span

ROOT = Path(__file__).resolve().parents[1]


def _on_pty(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120.0) -> tuple[int, str]:
    """Run `args` with stdin/stdout/stderr on a pseudo-terminal; its exit code and everything it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=cwd,
                            close_fds=True)
    os.close(follower)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                raise AssertionError(f"no output for {timeout}s: {seen[-2000:]!r}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        return proc.wait(30), seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def _dead_letters(path: Path, lines: int, per_line: int) -> int:
    with path.open("wb") as out:
        for line in range(lines):
            records = [make_span(line + 1, i + 1, name=f"r{line}-{i}") for i in range(per_line)]
            out.write(orjson.dumps({"dead_letter": True, "exporter": "file", "reason": "expired",
                                    "records": records}) + b"\n")
    return lines * per_line


def test_replay_shows_records_done_of_total_on_a_terminal_only(daemon_factory) -> None:
    """Into the queues (daemon stopped): on a pty a redrawn line with done of total and the rate; into a
    pipe only the summary."""
    daemon = daemon_factory()
    dead = daemon.root / "dead.ndjson"
    total = _dead_letters(dead, 400, 25)
    args = [sys.executable, "-m", "shipper", "replay", "-c", str(daemon.config_path), str(dead)]
    code, screen = _on_pty(args, env=daemon.env)
    assert code == 0, screen
    assert "\r\x1b[K" in screen
    drawn = re.findall(r"replay dead\.ndjson: ([\d,]+) of (?:about )?([\d,]+) records \(\d+%\), [\d,]+/s", screen)
    # every line holds 25 records, so the total estimated from the share of lines done is exact
    assert drawn and {t for _, t in drawn} == {f"{total:,}"}, screen
    assert f"queued {total} spans for exporter file" in screen
    piped = subprocess.run(args, capture_output=True, text=True, env=daemon.env, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and "\x1b" not in piped.stdout
    assert piped.stdout.strip() == f"queued {total} spans for exporter file; they go out when the daemon runs"
    forced = subprocess.run([*args, "--progress", "on"], capture_output=True, text=True, env=daemon.env,
                            timeout=120)
    assert "\x1b" not in forced.stderr and "\r" not in forced.stderr
    assert forced.stderr.splitlines()[-1].startswith(f"replay dead.ndjson: {total:,} of {total:,} records (100%), ")


def test_benchmarks_show_part_step_and_estimate_on_a_terminal(tmp_path: Path) -> None:
    """`python -m benchmarks run`: on a pty a status line (part, step, what is left, from the last run of
    the mode); into a pipe the plain step lines; each result records its parts' durations."""
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as out:
        run = [sys.executable, "-m", "benchmarks", "run", "--quick", "--parts", "exit", "--out", out, "--no-chart"]
        piped = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, timeout=240)
        assert piped.returncode == 0, piped.stderr
        assert "\x1b" not in piped.stderr
        assert piped.stderr.splitlines()[:2] == ["part 1/1: exit", "exit: measuring (quick)"]
        first = orjson.loads(sorted(Path(out).glob("*.json"))[-1].read_bytes())
        assert set(first["part_durations_s"]) == {"exit"}
        code, screen = _on_pty(run, cwd=ROOT, timeout=240)
        assert code == 0, screen
        assert re.search(r"part 1/1: exit, about \d+s by the last run", screen), screen
        assert re.search(r"part 1/1 exit · [^\r\n]*elapsed · about \d+s left", screen), screen
        assert "\r\x1b[K" in screen
