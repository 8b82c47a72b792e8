"""Progress of `python -m benchmarks run`: which part and step it is at, and about how long is left.

The estimate comes from the last result of the same mode: its `part_durations_s` (each part's wall time,
written since this module exists), else its total `duration_s`; the first run has none and says so. On a
terminal a status line under the step lines is redrawn at each step; otherwise the step lines are all
there is (each part announced on a line of its own), so a log file reads as before.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from benchmarks import results
from shipper.progress import duration

__all__ = ["BenchProgress"]


class BenchProgress:
    """Tracks the part being measured, its last step, and the time left by the previous run's figures."""

    def __init__(self, parts: list[str], mode: str, directory: Path, stream: TextIO | None = None) -> None:
        self.parts = parts
        self.stream = stream or sys.stderr
        try:
            self.terminal = self.stream.isatty()
        except (AttributeError, ValueError):
            self.terminal = False
        self.started = time.monotonic()
        self.part_started = self.started
        self.index = -1
        self.step = ""
        self.durations: dict[str, float] = {}
        self.previous = _previous(directory, mode)

    def _estimate(self, part: str) -> float | None:
        figures = self.previous.get("part_durations_s") or {}
        return float(figures[part]) if part in figures else None

    def left(self, now: float) -> float | None:
        """Seconds left by the last run of this mode, or None without one."""
        if not self.previous:
            return None
        remaining = [self._estimate(p) for p in self.parts[self.index + 1:]]
        current = self._estimate(self.parts[self.index]) if self.index >= 0 else 0.0
        if current is None or any(r is None for r in remaining):
            total = self.previous.get("duration_s")
            return max(0.0, float(total) - (now - self.started)) if total else None
        return max(0.0, current - (now - self.part_started)) + sum(r for r in remaining if r is not None)

    def status(self, now: float | None = None) -> str:
        """`part 2/4 exit · exit: 9 repetitions done · 4m10s elapsed · about 6m left`."""
        now = now or time.monotonic()
        part = self.parts[self.index] if self.index >= 0 else "-"
        left = self.left(now)
        estimate = f"about {duration(left)} left" if left is not None else "no estimate (no earlier run of this mode)"
        step = f" · {self.step.strip()}" if self.step else ""
        return f"part {self.index + 1}/{len(self.parts)} {part}{step} · {duration(now - self.started)} elapsed · {estimate}"

    def begin(self, part: str) -> None:
        """A part starts."""
        now = time.monotonic()
        if self.index >= 0:
            self.durations[self.parts[self.index]] = round(now - self.part_started, 1)
        self.index = self.parts.index(part)
        self.part_started = now
        self.step = ""
        guess = self._estimate(part)
        hint = f", about {duration(guess)} by the last run" if guess is not None else ""
        self.log(f"part {self.index + 1}/{len(self.parts)}: {part}{hint}")

    def finish(self) -> dict[str, float]:
        """Every part has run: clear the status line; returns each part's wall time."""
        if self.index >= 0 and self.parts[self.index] not in self.durations:
            self.durations[self.parts[self.index]] = round(time.monotonic() - self.part_started, 1)
        if self.terminal:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        return dict(self.durations)

    def log(self, message: str) -> None:
        """A step line: printed as a line; on a terminal the status line is redrawn under it."""
        if message.startswith("  "):
            self.step = message
        if self.terminal:
            self.stream.write("\r\x1b[K" + message + "\n" + self.status())
        else:
            self.stream.write(message + "\n")
        self.stream.flush()


def _previous(directory: Path, mode: str) -> dict[str, Any]:
    try:
        same = results.listing(directory, mode)
        return results.load(same[-1]) if same else {}
    except (OSError, ValueError):
        return {}
