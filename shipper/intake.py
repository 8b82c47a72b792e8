"""The intake budget: how much the daemon holds in memory between receipt and the exporters' queues.

Every record a receiver hands to the pipeline is charged here (its count and its size as received) and
given back once its batch is in every exporter's durable queue. Receivers ask `has_room()` before they
read more (the unix_socket receiver stops reading, so the kernel buffer and then the client's spool take
the pressure; otlp_http answers 503 with Retry-After), and `deliver` waits in `wait_room()` for the
others. Checks and charges happen without an await in between, so the budget can be exceeded by at most
the one message or request being read when it filled: `max_records` / `max_bytes` plus one
`max_message_bytes` socket message (or one `max_body_bytes` OTLP request). That is also what a `kill -9`
can lose of what the socket path delivered, whatever the shape of the messages.
"""

from __future__ import annotations

from typing import Any

import anyio

__all__ = ["IntakeBudget"]


class IntakeBudget:
    """Counts records and bytes in flight; wakes waiters when some are given back."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records = 0
        self.bytes = 0
        self.peak_records = 0
        self.peak_bytes = 0
        self.full_waits = 0
        self._changed: anyio.Event | None = None

    def has_room(self, records: int = 0, size: int = 0) -> bool:
        """Whether `records`/`size` more (already read, not yet charged) still leave room to read on."""
        return self.records + records < self.max_records and self.bytes + size < self.max_bytes

    def full(self) -> bool:
        return not self.has_room()

    async def wait_room(self) -> None:
        """Return at once when there is room; else wait until enough is given back."""
        while not self.has_room():
            self.full_waits += 1
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def take(self, records: int, size: int) -> None:
        """Charge what a receiver delivered."""
        self.records += records
        self.bytes += size
        if self.records > self.peak_records:
            self.peak_records = self.records
        if self.bytes > self.peak_bytes:
            self.peak_bytes = self.bytes

    def give_back(self, records: int, size: int) -> None:
        """Release what is now in every exporter's queue (or was dropped on purpose)."""
        self.records = max(0, self.records - records)
        self.bytes = max(0, self.bytes - size)
        if self._changed is not None and self.has_room():
            self._changed.set()
            self._changed = None

    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status`."""
        return {"in_flight_records": self.records, "in_flight_bytes": self.bytes,
                "peak_in_flight_records": self.peak_records, "peak_in_flight_bytes": self.peak_bytes,
                "max_records": self.max_records, "max_bytes": self.max_bytes, "intake_full_waits": self.full_waits}
