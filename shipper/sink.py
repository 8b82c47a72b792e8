"""A sink is what the pipeline hands each processed batch to, one per exporter.

`DirectSink` exports in the caller's task: the batch is safe once the exporter returned. It is the
simplest delivery and the one used by exporters that write locally (`file`).
"""

from __future__ import annotations

import logging
from typing import Any

from shipper.chain import Chain
from shipper.errors import ExportError
from shipper.record import Span
from shipper.stats import Counters

__all__ = ["DirectSink"]

log = logging.getLogger("shipper.sink")


class DirectSink:
    """Applies the exporter's own processors, then exports in batches of at most `batch.max_spans`."""

    def __init__(self, name: str, exporter: Any, chain: Chain, counters: Counters) -> None:
        self.name = name
        self.exporter = exporter
        self.chain = chain
        self.counters = counters
        self.max_spans = exporter.config.batch.max_spans

    def statistics(self) -> dict[str, Any]:
        """Live figures of the exporter."""
        stats = getattr(self.exporter, "statistics", None)
        return stats() if stats else {}

    async def open(self) -> None:
        await self.exporter.open()

    async def put(self, batch: list[Span]) -> None:
        """Process and export `batch`; a failure is logged and counted, never raised."""
        batch = self.chain(batch)
        await self._export(batch)

    async def put_processed(self, batch: list[Span]) -> None:
        """Export spans that already went through this exporter's processors (released at a reload)."""
        await self._export(batch)

    async def flush(self, force: bool = False) -> None:
        """Export what this exporter's own processors release on their timers."""
        await self._export(self.chain.flush(force))

    async def _export(self, batch: list[Span]) -> None:
        for start in range(0, len(batch), self.max_spans):
            part = batch[start:start + self.max_spans]
            try:
                await self.exporter.export(part)
            except ExportError as exc:
                self.counters.drop("export_failed", len(part))
                self.counters.last_error = str(exc)
                log.error("Exporter %s could not export %d spans: %s.", self.name, len(part), exc)
                continue
            self.counters.add("exported", len(part))

    async def aclose(self) -> None:
        await self.exporter.aclose()
