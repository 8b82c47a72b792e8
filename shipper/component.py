"""The small interfaces every receiver, processor and exporter shares, and what they are given.

- A **receiver** is opened (binds: after `open()` senders can connect), then `run(deliver)` hands each
  `Intake` to `deliver` (which applies backpressure) until cancelled; the pipeline calls `commit(mark)`
  once every record of that intake (and all before it) is safely in every exporter's queue and no tail
  sampler still holds spans begun before it, so a receiver with durable input advances its checkpoint
  only then (the spool's offsets, Kafka's committed offsets) and an OTLP receiver answers success only
  then. A receiver whose sender waits on the commit (`answers_senders = True`: OTLP over HTTP or gRPC)
  is committed once its records are in every exporter's queue or held by a tail sampler, never later:
  holding a request's answer for a sampler's `decision_wait` would outlast the sender's timeout and make
  it send everything again (docs/transports.md, "Tail sampling").
- A **processor** is a callable mapping a batch to a batch (`list[Record] -> list[Record]`); it counts what
  it drops. One that holds spans back (tail sampling) also has `flush(force) -> list[Record]`.
- An **exporter** sends one batch: `export(batch)` returns when the backend took it, or raises
  `RetryableExportError` / `PermanentExportError` (shipper.errors) to say what can be retried. It may
  return the number of the batch's records it dead-lettered itself (None: none), so they are not also
  counted `exported`.
Each has `open()` and an idempotent `aclose()`; `aclose()` is safe without `open()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from shipper.record import MAX_RECORD_BYTES, Record, Reject
from shipper.stats import Counters

__all__ = ["Context", "Deliver", "Exporter", "Intake", "Processor", "Receiver"]


@dataclass(slots=True)
class Intake:
    """What a receiver yields: decoded records, rejected lines, and a mark to commit later.

    An OTLP receiver may instead hand over a request as it came (`otlp`: a protobuf
    ExportTraceServiceRequest of `otlp_spans` spans), when the pipeline's `Context.forwarding` allows it:
    the pipeline queues it as it is for exporters that send OTLP on unchanged (docs/forwarding.md)."""

    records: list[Record]
    rejects: list[Reject] = field(default_factory=list)
    mark: Any = None
    source: str = ""
    size: int = 0
    otlp: bytes = b""
    otlp_spans: int = 0

    @property
    def count(self) -> int:
        """How many spans (records, rejects and forwarded spans) this intake holds."""
        return len(self.records) + len(self.rejects) + self.otlp_spans


Deliver = Callable[[Intake], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Context:
    """What every component is built with: its name, the state directory, its counters."""

    name: str
    state_dir: Path
    counters: Counters
    max_record_bytes: int = MAX_RECORD_BYTES
    intake: Any = None
    """The pipeline's `shipper.intake.IntakeBudget`: receivers check `has_room()` before reading more."""
    forwarding: Callable[[], tuple[int, int] | None] | None = None
    """The pipeline's `forward_limits`: (max spans, max bytes) of an OTLP request that may be handed over
    as it came (`Intake.otlp`), or None while something must see the spans as records."""


class Receiver(Protocol):
    """Yields intakes; commits marks once their records are safe."""

    async def open(self) -> None: ...

    async def run(self, deliver: Deliver) -> None: ...

    async def commit(self, mark: Any) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Processor(Protocol):
    """Maps a batch to a batch."""

    def __call__(self, batch: list[Record]) -> list[Record]: ...


class Exporter(Protocol):
    """Sends one batch, or raises an ExportError saying whether it can be retried."""

    async def open(self) -> None: ...

    async def export(self, batch: list[Record]) -> int | None: ...

    async def aclose(self) -> None: ...

