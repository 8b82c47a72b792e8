"""A sink is what the pipeline hands each processed batch to, one per exporter: its processors, its queue.

`QueuedSink.put` runs the exporter's own processors and appends the result to the exporter's durable
queue (queue.py); it returns once the batch is in the queue, which is when the pipeline may commit its
receivers' marks. A delivery worker (delivery.py), started by `run`, takes batches from the queue and
exports them. Every exporter, the local `file` one included, goes through its queue, so each one has
the same guarantees, figures and shutdown behaviour; a slow or dead backend only grows its own queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from shipper.chain import Chain
from shipper.component import Context, Exporter
from shipper.deadletter import DeadLetters
from shipper.delivery import Delivery
from shipper.errors import ConfigError
from shipper.queue import DiskQueue
from shipper.record import Record
from shipper.settings import DeliveryConfig
from shipper.stats import Counters

__all__ = ["QueuedSink", "open_queue"]


def open_queue(name: str, delivery: DeliveryConfig, state_dir: Path, counters: Counters) -> DiskQueue:
    """The (unopened) durable queue of exporter `name`, sized by its `queue` and `batch` settings."""
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise ConfigError([f"exporters.{name}: an exporter's name names its queue directory and dead-letter "
                           "file, so it cannot be empty, start with a dot or hold a slash"])
    return DiskQueue(state_dir / "queues" / name, delivery.queue, counters,
                     record_spans=delivery.batch.max_spans, record_bytes=delivery.batch.max_bytes)


class QueuedSink:
    """Own processors, then the durable queue; a delivery worker exports from the queue.

    `delivery` (the exporter's `queue`, `retry` and `batch` keys) sizes the queue and paces the worker.
    """

    def __init__(self, name: str, exporter: Exporter, chain: Chain, ctx: Context, delivery: DeliveryConfig) -> None:
        self.name = name
        self.exporter = exporter
        self.chain = chain
        self.counters = ctx.counters
        self.queue = open_queue(name, delivery, ctx.state_dir, ctx.counters)
        self.deadletters = DeadLetters(ctx.state_dir / "deadletter", name)
        self.delivery = Delivery(name, exporter, self.queue, self.deadletters, delivery, ctx.counters)

    def statistics(self) -> dict[str, Any]:
        """Live figures: the queue, the worker, the dead letters and the exporter's own."""
        out: dict[str, Any] = {}
        own = getattr(self.exporter, "statistics", None)
        if own is not None:
            out.update(own())
        out.update({key: self.counters.counts.get(key, 0) for key in ("queued", "exported", "retried", "dead_lettered")})
        out["last_error"] = self.counters.last_error
        out.update(self.queue.statistics())
        out.update(self.delivery.statistics())
        out.update(self.deadletters.statistics())
        return out

    async def open(self) -> None:
        """Recover the queue, then open the exporter."""
        await self.queue.open()
        try:
            await self.exporter.open()
        except BaseException:
            await self.queue.aclose()
            raise

    async def run(self) -> None:
        """The delivery worker and the queue's background fsync, until cancelled or drained."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.queue.run)
            await self.delivery.run()
            tg.cancel_scope.cancel()

    @property
    def passes_through(self) -> bool:
        """True when this exporter has no processors of its own: what it queues is what it is given."""
        return not self.chain.processors

    async def put(self, batch: list[Record], lines: list[bytes] | None = None) -> None:
        """Run the exporter's processors on `batch` and queue the result durably.

        `lines`: the batch already encoded (`queue.encode_lines`), used only when this exporter has no
        processors of its own (the pipeline encodes a batch once for all such exporters)."""
        if lines is not None and self.passes_through:
            if batch:
                await self.queue.put(batch, lines)
            return
        batch = self.chain(batch)
        if batch:
            await self.queue.put(batch)

    @property
    def forwards_otlp(self) -> bool:
        """True when OTLP requests may be queued here as they came: no processors of its own, and an
        exporter that sends them on unchanged (docs/forwarding.md)."""
        return not self.chain.processors and bool(getattr(self.exporter, "forwards_otlp", False))

    async def put_forwarded(self, body: bytes, count: int) -> None:
        """Queue an OTLP request of `count` spans as it came (the pipeline checked `forwards_otlp`)."""
        await self.queue.put_forwarded(body, count)

    async def put_processed(self, batch: list[Record]) -> None:
        """Queue spans that already went through this exporter's processors (released at a reload)."""
        if batch:
            await self.queue.put(batch)

    async def flush(self, force: bool = False) -> None:
        """Queue what this exporter's own processors release on their timers."""
        await self.put_processed(self.chain.flush(force))

    async def drain(self) -> None:
        """Stop the worker once what is queued is sent or the backend fails (bounded by the caller)."""
        await self.delivery.drain()

    async def aclose(self) -> None:
        """Close the exporter, then the queue (fsync, release its lock). Idempotent."""
        try:
            await self.exporter.aclose()
        finally:
            await self.queue.aclose()
