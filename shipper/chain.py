"""An ordered list of processors applied as one: the shared list, or an exporter's own.

A processor that raises never stops the daemon. Its batch is run through it again record by record:
the records it handles go on, and each record it still raises on is dead-lettered (reason
`processor_error`, counted on the processor and in the daemon's drop totals) to
`<state_dir>/deadletter/processors.ndjson`, with the default redaction applied, so a secret that the
failing processor (say, a redaction) should have masked never reaches a backend nor rests on disk.
Dead-lettering, not passing the records on unprocessed, is the choice because an unprocessed record
could carry exactly what the processor exists to remove. The first error of each processor is logged
with its name and traceback; later ones are counted, and logged again at most once a minute.
Once the processor is fixed, `shipper replay <state_dir>/deadletter/processors.ndjson --all` with the
daemon running sends them through the processors again (as masked by the default redaction).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from shipper import registry
from shipper.component import Context, Processor
from shipper.config import ComponentSpec
from shipper.record import Record
from shipper.stats import Counters, Stats

__all__ = ["Chain", "build_chain"]

log = logging.getLogger("shipper.chain")

_RELOG_SECONDS = 60.0


class Chain:
    """Runs processors in order; `flush` drains held spans (tail sampling) through the rest."""

    def __init__(self, processors: list[Processor], names: list[str] | None = None,
                 counters: list[Counters] | None = None, deadletters: Any = None) -> None:
        self.processors = processors
        self.names = names or [f"[{i}]" for i in range(len(processors))]
        self.counters = counters or [Counters() for _ in processors]
        self.deadletters = deadletters
        self._logged: dict[int, float] = {}

    def statistics(self) -> dict[str, dict[str, object]]:
        """Live figures of the processors that have some (e.g. what tail sampling holds), by name."""
        out: dict[str, dict[str, object]] = {}
        for name, processor in zip(self.names, self.processors):
            live = getattr(processor, "statistics", None)
            if live is not None:
                out[name] = live()
        return out

    def __call__(self, batch: list[Record]) -> list[Record]:
        for i, processor in enumerate(self.processors):
            if not batch:
                break
            batch = self._apply(i, processor, batch)
        return batch

    def _apply(self, i: int, processor: Processor, batch: list[Record]) -> list[Record]:
        """`processor(batch)`; if it raises, record by record, dead-lettering the records it fails on."""
        try:
            return processor(batch)
        except Exception as exc:
            first = exc
        out: list[Record] = []
        failed: list[Record] = []
        for record in batch:
            try:
                out.extend(processor([record]))
            except Exception:
                failed.append(record)
        self._failed(i, first, failed, len(batch))
        return out

    def _failed(self, i: int, exc: Exception, records: list[Record], batch_size: int) -> None:
        from shipper import security

        name = self.names[i]
        counters = self.counters[i]
        counters.add("errors")
        counters.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if records:
            counters.drop("processor_error", len(records))
            if self.deadletters is not None:
                self.deadletters.write([_masked(r) for r in records], "processor_error",
                                       error=f"processor {name}: {type(exc).__name__}: {exc}")
        now = time.monotonic()
        last = self._logged.get(i)
        if last is None:
            self._logged[i] = now
            log.error("Processor %s raised on a batch of %d spans; %d of them it still fails on alone were "
                      "dead-lettered (processor_error) to %s, the rest went on. The daemon keeps running; "
                      "this is a bug in the processor or its settings. Later errors are counted.", name,
                      batch_size, len(records), getattr(self.deadletters, "path", "nowhere"),
                      exc_info=(type(exc), exc, exc.__traceback__))
        elif now - last >= _RELOG_SECONDS:
            self._logged[i] = now
            log.error("Processor %s keeps raising (%s: %s); %d errors so far, see processor_error in "
                      "`shipper status`.", name, type(exc).__name__, security.redact(str(exc))[:200],
                      counters.counts.get("errors", 0))

    def flush(self, force: bool = False) -> list[Record]:
        """Spans released by processors that hold some back, run through the processors after them."""
        out: list[Record] = []
        for i, processor in enumerate(self.processors):
            flush = getattr(processor, "flush", None)
            if flush is None:
                continue
            try:
                released = flush(force)
            except Exception as exc:  # what it held stays held; it may release it on the next tick
                self._failed(i, exc, [], 0)
                continue
            for j in range(i + 1, len(self.processors)):
                if not released:
                    break
                released = self._apply(j, self.processors[j], released)
            out.extend(released)
        return out

    def holding_since(self) -> float | None:
        """The earliest `holding_since()` of the processors that hold spans back, None if none holds any."""
        times = [t for t in (getattr(p, "holding_since", lambda: None)() for p in self.processors) if t is not None]
        return min(times) if times else None

    def close(self) -> None:
        """Let processors release what they hold (e.g. background state) before being dropped."""
        for processor in self.processors:
            close = getattr(processor, "close", None)
            if close is not None:
                close()


_DEFAULT_REDACT: list[Processor] = []


def _masked(record: Record) -> Record:
    """A copy of `record` with the default redaction applied (a secret must not rest in a dead letter)."""
    if not _DEFAULT_REDACT:
        from shipper.processors.redact import RedactConfig, RedactProcessor

        _DEFAULT_REDACT.append(RedactProcessor(RedactConfig(), Context(name="deadletter", state_dir=Path("."),
                                                              counters=Counters())))
    try:
        return _DEFAULT_REDACT[0]([record])[0]
    except Exception:  # the record itself may be what breaks processors: keep only its identity
        return {key: record.get(key) for key in ("v", "trace_id", "span_id", "name") if key in record}


def build_chain(specs: list[ComponentSpec], stats: Stats, state_dir: Path, scope: str,
                max_record_bytes: int) -> Chain:
    """Instantiate the processors of `specs`; their counters live under `scope` (e.g. `shared`)."""
    from shipper.deadletter import DeadLetters

    processors: list[Processor] = []
    names: list[str] = []
    counters = []
    for i, spec in enumerate(specs):
        name = f"{scope}[{i}].{spec.type}"
        ctx = Context(name=name, state_dir=state_dir, counters=stats.component("processors", name),
                      max_record_bytes=max_record_bytes)
        processors.append(registry.load("processors", spec.type)(spec.config, ctx))
        names.append(name)
        counters.append(ctx.counters)
    return Chain(processors, names, counters, DeadLetters(Path(state_dir) / "deadletter", "processors"))
