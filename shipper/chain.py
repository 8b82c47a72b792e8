"""An ordered list of processors applied as one: the shared list, or an exporter's own."""

from __future__ import annotations

from pathlib import Path

from shipper import registry
from shipper.component import Context, Processor
from shipper.config import ComponentSpec
from shipper.record import Record
from shipper.stats import Stats

__all__ = ["Chain", "build_chain"]


class Chain:
    """Runs processors in order; `flush` drains held spans (tail sampling) through the rest."""

    def __init__(self, processors: list[Processor], names: list[str] | None = None) -> None:
        self.processors = processors
        self.names = names or [f"[{i}]" for i in range(len(processors))]

    def statistics(self) -> dict[str, dict[str, object]]:
        """Live figures of the processors that have some (e.g. what tail sampling holds), by name."""
        out: dict[str, dict[str, object]] = {}
        for name, processor in zip(self.names, self.processors):
            live = getattr(processor, "statistics", None)
            if live is not None:
                out[name] = live()
        return out

    def __call__(self, batch: list[Record]) -> list[Record]:
        for processor in self.processors:
            if not batch:
                break
            batch = processor(batch)
        return batch

    def flush(self, force: bool = False) -> list[Record]:
        """Spans released by processors that hold some back, run through the processors after them."""
        out: list[Record] = []
        for i, processor in enumerate(self.processors):
            flush = getattr(processor, "flush", None)
            if flush is None:
                continue
            released = flush(force)
            for later in self.processors[i + 1:]:
                if not released:
                    break
                released = later(released)
            out.extend(released)
        return out

    def close(self) -> None:
        """Let processors release what they hold (e.g. background state) before being dropped."""
        for processor in self.processors:
            close = getattr(processor, "close", None)
            if close is not None:
                close()


def build_chain(specs: list[ComponentSpec], stats: Stats, state_dir: Path, scope: str,
                max_record_bytes: int) -> Chain:
    """Instantiate the processors of `specs`; their counters live under `scope` (e.g. `shared`)."""
    processors: list[Processor] = []
    names: list[str] = []
    for i, spec in enumerate(specs):
        name = f"{scope}[{i}].{spec.type}"
        ctx = Context(name=name, state_dir=state_dir, counters=stats.component("processors", name),
                      max_record_bytes=max_record_bytes)
        processors.append(registry.load("processors", spec.type)(spec.config, ctx))
        names.append(name)
    return Chain(processors, names)
