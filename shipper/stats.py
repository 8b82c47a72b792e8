"""Counters per component, the numbers behind `shipper status` and the metrics endpoint.

Every record that is not delivered is counted under a reason (docs/transports.md, Drop reasons): intentional drops (`sampled`,
`filtered`) and the others (`malformed`, `queue_full`, `rejected_by_backend`, `expired`,
`processor_error`, ...). Counters are plain ints bumped from the event loop thread, so no locks.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

__all__ = ["Counters", "Stats", "process_rss_bytes"]


def process_rss_bytes() -> int | None:
    """This process's resident memory now (Linux `/proc/self/statm`), None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Counters:
    """Monotonic counters of one component: `received`, `exported`, ... and drops by reason."""

    __slots__ = ("counts", "dropped", "malformed", "last_error")

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self.malformed: defaultdict[str, int] = defaultdict(int)
        self.last_error: str | None = None

    def add(self, key: str, n: int = 1) -> None:
        """Bump counter `key` by `n`."""
        self.counts[key] += n

    def drop(self, reason: str, n: int = 1) -> None:
        """Count `n` records not delivered, under `reason`."""
        if n:
            self.dropped[reason] += n

    def reject(self, reason: str, n: int = 1) -> None:
        """Count `n` malformed records under their specific reason (and as dropped `malformed`)."""
        self.malformed[reason] += n
        self.dropped["malformed"] += n

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the counters."""
        out: dict[str, Any] = dict(self.counts)
        if self.dropped:
            out["dropped"] = dict(self.dropped)
        if self.malformed:
            out["malformed"] = dict(self.malformed)
        if self.last_error:
            out["last_error"] = self.last_error
        return out


class Stats:
    """All components' counters, by section (`receivers`, `processors`, `exporters`, `pipeline`)."""

    def __init__(self) -> None:
        self._sections: dict[str, dict[str, Counters]] = defaultdict(dict)

    def component(self, section: str, name: str) -> Counters:
        """The counters of one component, created on first use and kept across reloads."""
        counters = self._sections[section].get(name)
        if counters is None:
            counters = self._sections[section][name] = Counters()
        return counters

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every section's counters, JSON-ready."""
        return {
            section: {name: counters.snapshot() for name, counters in components.items()}
            for section, components in self._sections.items()
        }

    def dropped_totals(self) -> dict[str, int]:
        """Drops by reason summed over every component."""
        totals: defaultdict[str, int] = defaultdict(int)
        for components in self._sections.values():
            for counters in components.values():
                for reason, n in counters.dropped.items():
                    totals[reason] += n
        return dict(totals)
