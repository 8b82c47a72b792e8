"""Progress of long work (`shipper replay`, `python -m benchmarks run`): live on a terminal, quiet otherwise.

On a terminal one status line is redrawn in place (`\\r`, erase to the end of the line) at most ten times
a second: done of total, rate, and an estimate of what is left. When the output is not a terminal (a
pipe, a file, the journal) nothing is redrawn: `mode="auto"` prints no progress at all, `mode="on"`
prints a plain line at most every `every` seconds and one at the end. A few lines by hand rather than a dependency: the
package keeps to what the daemon needs.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "duration"]


def duration(seconds: float) -> str:
    """`45s`, `3m05s`, `1h02m`."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """Counts work done of `total` and shows it (see the module docstring)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "records", stream: TextIO | None = None,
                 mode: str = "auto", every: float = 10.0) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        terminal = _isatty(self.stream)
        self.live = mode != "off" and terminal
        self.lines = mode == "on" and not terminal
        self.every = every
        self.done = 0
        self.share: float | None = None
        self.started = time.monotonic()
        self._drawn_at = 0.0 if self.live else self.started  # plain lines: the first after `every` seconds
        self._shown = False

    def restart(self) -> None:
        """Start the clock now (after a count of the total, say), so the rate covers the work only."""
        self.started = time.monotonic()
        if not self.live:
            self._drawn_at = self.started

    @property
    def shown(self) -> bool:
        """Whether anything is shown at all."""
        return self.live or self.lines

    def advance(self, n: int = 1, share: float | None = None) -> None:
        """Count `n` more done; `share`: the fraction of the work done so far, when the total is not known
        exactly (the total is then estimated from it); redraw if it is time."""
        self.done += n
        if share is not None:
            self.share = share
        now = time.monotonic()
        if self.live and now - self._drawn_at >= 0.1:
            self._draw(now)
        elif self.lines and now - self._drawn_at >= self.every:
            self._drawn_at = now
            self.stream.write(self.text(now) + "\n")
            self.stream.flush()

    def text(self, now: float | None = None) -> str:
        """`label: 1,200 of 10,000 records (12%), 3,400/s, about 2s left`."""
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            share = min(self.done / self.total, 1.0)
            text = f"{self.label}: {self.done:,} of {self.total:,} {self.unit} ({share:.0%}), {rate:,.0f}/s"
        elif self.share:
            share = min(self.share, 1.0)
            estimate = round(self.done / share) if share < 1.0 else self.done
            text = (f"{self.label}: {self.done:,} of {'about ' if share < 1.0 else ''}{estimate:,} {self.unit} "
                    f"({share:.0%}), {rate:,.0f}/s")
        else:
            return f"{self.label}: {self.done:,} {self.unit}, {rate:,.0f}/s"
        if rate > 0 and share < 1.0:
            text += f", about {duration(elapsed * (1 - share) / share if share else 0)} left"
        return text

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._shown = True
        self.stream.write("\r\x1b[K" + self.text(now))
        self.stream.flush()

    def close(self) -> None:
        """Leave the terminal line clean for what is printed next."""
        if self.live and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        elif self.lines and self.done:
            self.stream.write(self.text() + "\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
