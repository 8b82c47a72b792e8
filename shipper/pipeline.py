"""The daemon's topology, lifecycle, reload and shutdown order: the only module that knows all of them.

Topology:

    receivers ──deliver()──▶ intake stream ──▶ batcher   (bounded in records and bytes by `intake`:
                                                          receivers stop reading while it is full)
        ──▶ shared processors ──▶ for each exporter: its sink (own processors, then its durable queue)
        ──▶ receivers' commit(mark) once the batch is in every exporter's queue (and no processor
            still holds spans of it: tail sampling defers the commit, see `_commit_ready`)
    each exporter's queue ──▶ its delivery worker (batch, export, retry, dead-letter) ──▶ its backend

A receiver that fails (raises out of `run`) is logged, counted (`receiver_error`) and restarted after a
backoff; it never stops the daemon or another receiver. A processor that raises is handled by its chain
(chain.py: `processor_error`, dead-lettered), never by ending the intake loop.

Start: open sinks (queues recovered, exporters opened), then receivers (bind), then start tasks (the
delivery workers among them); `task_status.started()` and the
`ready` listeners fire only once every receiver is bound.
Shutdown (SIGTERM, SIGINT, or `stop()`), shielded, within `shutdown_timeout`:
  1. stop intake: receivers with a `drain()` (unix_socket) stop accepting and read what their connections'
     kernel buffers already hold; then the receivers' tasks are cancelled (senders fall back to their spool);
  2. close the intake stream; the batcher drains what was received, processors release what they hold
     (forced), sinks queue the last batches, marks are committed;
  3. drain the delivery workers: each keeps exporting what is queued while its backend answers, and stops
     at its first failure; at the deadline the rest stays in the queues for the next start;
  4. close sinks (exporters, then queues fsynced), then receivers (spool offsets saved, socket removed).
Reload (SIGHUP, `shipper reload`): read and validate the config; if invalid, keep running the old one
and report the problems; else swap the processor chains between two batches (what the old chains held
is flushed through). Receivers and exporters need a restart to change; a reload says so.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shipper import registry
from shipper.batching import batches
from shipper.chain import Chain, build_chain
from shipper.component import Context, Deliver, Intake, Receiver
from shipper.config import Config, load_config
from shipper.errors import ConfigError
from shipper.intake import IntakeBudget
from shipper.queue import encode_lines
from shipper.record import Record
from shipper.rejects import RejectLog
from shipper.settings import DeliveryConfig
from shipper.sink import QueuedSink
from shipper.stats import Stats, process_rss_bytes

__all__ = ["Pipeline"]

log = logging.getLogger("shipper.pipeline")

Listener = Callable[[str, "Pipeline"], None]
Service = Callable[["Pipeline"], Coroutine[Any, Any, None]]
Hook = Callable[[], Awaitable[None]]


class Pipeline:
    """Builds the components of a config and runs them until stopped."""

    def __init__(self, config: Config, config_path: str | None = None, stats: Stats | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.stats = stats or Stats()
        self.settings = config.settings
        self.state_dir = Path(self.settings.state_dir)
        self.started_at = time.time()
        self.listeners: list[Listener] = []
        self.services: list[Service] = []  # run beside the pipeline: control socket, metrics, systemd
        self.openers: list[Hook] = []  # awaited once the receivers are bound, before `ready`
        self.closers: list[Hook] = []  # awaited first at shutdown, before the sinks close
        self.taps: list[Callable[[list[Record]], None]] = []  # `shipper tail` watchers
        self.counters = self.stats.component("pipeline", "intake")
        self.budget = IntakeBudget(self.settings.intake.max_records, self.settings.intake.max_bytes)
        self.rejects = RejectLog(self.state_dir / "rejected")
        self._stop: anyio.Event | None = None
        self._stop_requested = False
        self._deferred: deque[tuple[float, list[tuple[Receiver, Any]]]] = deque()  # (handled at, marks)
        self._drained: anyio.Event | None = None
        self._send: MemoryObjectSendStream[tuple[Receiver, Intake]] | None = None
        self.receivers: dict[str, Receiver] = {}
        self.sinks: dict[str, QueuedSink] = {}
        self.chain: Chain = Chain([])
        self._reload_lock: anyio.Lock | None = None
        self._build()

    def _context(self, section: str, name: str) -> Context:
        return Context(name=name, state_dir=self.state_dir, counters=self.stats.component(section, name),
                       max_record_bytes=self.settings.max_record_bytes, intake=self.budget)

    def _build(self) -> None:
        for spec in self.config.receivers:
            cls = registry.load("receivers", spec.type)
            self.receivers[spec.name] = cls(spec.config, self._context("receivers", spec.name))
        self.chain, own = self._chains(self.config)
        for spec in self.config.exporters:
            cls = registry.load("exporters", spec.type)
            ctx = self._context("exporters", spec.name)
            self.sinks[spec.name] = QueuedSink(spec.name, cls(spec.config, ctx), own[spec.name], ctx,
                                              spec.delivery or DeliveryConfig())

    def _chains(self, config: Config) -> tuple[Chain, dict[str, Chain]]:
        limit = config.settings.max_record_bytes
        shared = build_chain(config.processors, self.stats, self.state_dir, "shared", limit)
        own = {spec.name: build_chain(spec.processors, self.stats, self.state_dir, spec.name, limit)
               for spec in config.exporters}
        return shared, own

    def _emit(self, event: str) -> None:
        for listener in self.listeners:
            try:
                listener(event, self)
            except Exception:  # a listener must never take the daemon down
                log.exception("A %s listener failed.", event)

    # -- running ------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open everything, run until `stop()` or a signal, then shut down in order."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop = anyio.Event()
        self._drained = anyio.Event()
        if self._stop_requested:
            self._stop.set()
        send, receive = anyio.create_memory_object_stream[tuple[Receiver, Intake]](64)
        self._send = send
        opened_sinks: list[QueuedSink] = []
        opened_receivers: list[Receiver] = []
        try:
            for sink in self.sinks.values():
                await sink.open()
                opened_sinks.append(sink)
            for receiver in self.receivers.values():
                await receiver.open()
                opened_receivers.append(receiver)
            for opener in self.openers:
                await opener()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._process, receive)
                intake = anyio.CancelScope()
                tg.start_soon(self._run_receivers, intake)
                await tg.start(self._signals, tg.cancel_scope)  # handlers in place before "ready"
                for sink in self.sinks.values():
                    tg.start_soon(sink.run)
                for service in self.services:
                    tg.start_soon(service, self)
                log.info("shipper is ready: %d receivers, %d exporters, config %s.",
                         len(self.receivers), len(self.sinks), self.config.source)
                self._emit("ready")
                task_status.started()
                await self._stop.wait()
                self._emit("stopping")
                log.info("Stopping: no more intake, flushing what was received.")
                with anyio.move_on_after(self.settings.shutdown_timeout, shield=True) as deadline:
                    async with anyio.create_task_group() as draining:
                        for receiver in self.receivers.values():
                            if hasattr(receiver, "drain"):
                                draining.start_soon(receiver.drain)
                    intake.cancel()
                    await send.aclose()
                    await self._drained.wait()
                    async with anyio.create_task_group() as drain:
                        for sink in self.sinks.values():
                            drain.start_soon(sink.drain)
                if deadline.cancelled_caught:
                    log.error("Shutdown took longer than shutdown_timeout (%.1fs); exiting now. What is in "
                              "the exporter queues goes out at the next start; what was received but not yet "
                              "queued is lost.", self.settings.shutdown_timeout)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for closer in self.closers:
                    await closer()
                for sink in opened_sinks:
                    await sink.aclose()
                for receiver in opened_receivers:
                    await receiver.aclose()
            log.info("shipper stopped.")

    def stop(self) -> None:
        """Begin the shutdown sequence."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def _run_receivers(self, scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                for name, receiver in self.receivers.items():
                    tg.start_soon(self._supervise, name, receiver)

    async def _supervise(self, name: str, receiver: Any) -> None:
        """Run one receiver; if it fails, log, count `receiver_error` and run it again after a backoff."""
        deliver = self._deliverer(receiver)
        counters = self.stats.component("receivers", name)
        wait = 0.1
        while True:
            started = time.monotonic()
            try:
                await receiver.run(deliver)
                return
            except Exception as exc:
                counters.add("receiver_error")
                counters.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if time.monotonic() - started > 60:
                    wait = 0.1
                log.error("Receiver %s failed; restarting it in %.1fs. The other receivers and the exporters "
                          "keep running.", name, wait, exc_info=counters.counts["receiver_error"] == 1)
                await anyio.sleep(wait)
                wait = min(wait * 2, 5.0)

    def _deliverer(self, receiver: Receiver) -> Deliver:
        budget = self.budget

        async def deliver(intake: Intake) -> None:
            assert self._send is not None
            await budget.wait_room()
            budget.take(len(intake.records) + len(intake.rejects), intake.size)
            try:
                await self._send.send((receiver, intake))
            except BaseException:
                budget.give_back(len(intake.records) + len(intake.rejects), intake.size)
                raise
        return deliver

    async def _signals(self, scope: anyio.CancelScope, *,
                       task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                elif self._stop_requested:
                    log.warning("Second stop signal: exiting now.")
                    scope.cancel()
                else:
                    self.stop()

    async def _process(self, receive: MemoryObjectReceiveStream[tuple[Receiver, Intake]]) -> None:
        settings = self.settings.batch
        try:
            async for batch in batches(
                receive,
                max_items=settings.max_spans,
                max_bytes=settings.max_bytes,
                max_delay=settings.max_delay,
                size_of=lambda item: (len(item[1].records) + len(item[1].rejects), item[1].size),
                idle_tick=max(settings.max_delay, 0.05),
            ):
                await self._handle(batch)
            await self._flush_held(force=True)
        finally:
            assert self._drained is not None
            self._drained.set()

    async def _handle(self, batch: list[tuple[Receiver, Intake]]) -> None:
        if not batch:
            await self._flush_held(force=False)
            return
        try:
            await self._queue(batch)
        finally:
            for _, intake in batch:
                self.budget.give_back(len(intake.records) + len(intake.rejects), intake.size)

    async def _queue(self, batch: list[tuple[Receiver, Intake]]) -> None:
        records: list[Record] = []
        for _, intake in batch:
            if intake.rejects:
                self._reject(intake)
            records.extend(intake.records)
        self.counters.add("received", len(records))
        chain = self.chain  # one chain per batch, so a reload swaps between batches
        processed = chain(records) if records else records
        for tap in self.taps:
            tap(processed)
        sinks = self.sinks.values()
        lines = None
        if processed and sum(getattr(sink, "passes_through", False) for sink in sinks) > 1:
            lines = encode_lines(processed)  # once for every exporter without processors of its own
        for sink in sinks:
            await sink.put(list(processed) if len(self.sinks) > 1 else processed, lines)
        self.counters.add("processed", len(processed))
        marks: list[tuple[Receiver, Any]] = []
        for receiver, intake in batch:
            if intake.mark is None:
                continue
            if getattr(receiver, "answers_senders", False):
                await receiver.commit(intake.mark)  # a waiting sender: its answer cannot wait for a sampler
            else:
                marks.append((receiver, intake.mark))
        if marks or self._deferred:
            self._deferred.append((time.monotonic(), marks))
        await self._commit_ready()

    async def _commit_ready(self) -> None:
        """Commit the receivers' marks of the batches no processor still holds spans of.

        A tail sampler holds traces in memory; committing their input (spool or Kafka offsets) before they
        are queued would lose them at a crash. A batch handled before the oldest held trace began holds
        nothing there, so its marks go; later ones wait (at most the sampler's decision_wait). With no
        processor holding anything, every mark is committed right after its batch is queued.
        """
        held = [t for t in (chain.holding_since() for chain in self._chains_now()) if t is not None]
        oldest = min(held) if held else None
        while self._deferred and (oldest is None or self._deferred[0][0] < oldest):
            _, marks = self._deferred.popleft()
            for receiver, mark in marks:
                await receiver.commit(mark)

    def _chains_now(self) -> list[Chain]:
        return [self.chain, *(getattr(sink, "chain", None) or Chain([]) for sink in self.sinks.values())]

    def _reject(self, intake: Intake) -> None:
        for reject in intake.rejects:
            self.counters.reject(reject.reason)
        self.rejects.write(intake.source, intake.rejects)
        first = intake.rejects[0]
        log.warning("Set aside %d malformed records from %s (first: %s, %s).", len(intake.rejects),
                    intake.source, first.reason, first.detail)

    async def _flush_held(self, force: bool) -> None:
        released = self.chain.flush(force)
        for sink in self.sinks.values():
            if released:
                await sink.put(list(released))
            await sink.flush(force)
        await self._commit_ready()

    # -- reload -------------------------------------------------------------------------------------

    async def reload(self) -> list[str]:
        """Re-read the config; swap processors if valid. Returns the problems (empty when reloaded)."""
        if self._reload_lock is None:
            self._reload_lock = anyio.Lock()
        async with self._reload_lock:  # a second SIGHUP waits for the first reload
            self._emit("reloading")
            try:
                return await self._reload()
            finally:
                self._emit("ready")

    async def _reload(self) -> list[str]:
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("Reload refused, the running config stays: %s", "; ".join(exc.problems))
            return exc.problems
        try:
            shared, own = self._chains(new)
        except Exception as exc:  # a processor refused its settings at construction
            log.error("Reload refused, the running config stays: %s: %s", new.source, exc)
            return [f"{new.source}: {exc}"]
        # Swap every chain with no await in between, so no batch sees half the new config; then
        # release what the old chains held (tail sampling) through the new ones.
        old_shared, self.chain = self.chain, shared
        old_own: dict[str, Chain] = {}
        for name, sink in self.sinks.items():
            if name in own:
                old_own[name], sink.chain = sink.chain, own[name]
        held = old_shared.flush(force=True)
        old_shared.close()
        for name, old in old_own.items():
            released = old.flush(force=True)
            old.close()
            await self.sinks[name].put_processed(released)
        if held:
            for sink in self.sinks.values():
                await sink.put(list(held))
        restart = [key for key in sorted((set(new.raw) | set(self.config.raw)) - {"processors"})
                   if _without_processors(new.raw.get(key), key) != _without_processors(self.config.raw.get(key), key)]
        if restart:
            log.warning("Reloaded the processors from %s; changes to %s take effect on restart.",
                        new.source, ", ".join(restart))
        else:
            log.info("Reloaded the config from %s.", new.source)
        self.config.processors = new.processors
        for spec in self.config.exporters:
            spec.processors = next((s.processors for s in new.exporters if s.name == spec.name), spec.processors)
        self.counters.add("reloads")
        return []

    # -- status -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts and live figures per component, for `shipper status`."""
        snapshot = self.stats.snapshot()
        out: dict[str, Any] = {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "rss_bytes": process_rss_bytes(),
            "config": self.config.source,
            "state_dir": str(self.state_dir),
            "pipeline": {**snapshot.get("pipeline", {}).get("intake", {}), "tail_watchers": len(self.taps),
                         **self.budget.statistics()},
            "dropped": self.stats.dropped_totals(),
        }
        for section, components in (("receivers", self.receivers), ("exporters", self.sinks)):
            out[section] = {}
            for name, component in components.items():
                figures = dict(snapshot.get(section, {}).get(name, {}))
                live = getattr(component, "statistics", None)
                if live is not None:
                    figures.update(live())
                out[section][name] = figures
        processors = {name: dict(figures) for name, figures in snapshot.get("processors", {}).items()}
        chains = [self.chain, *(getattr(sink, "chain", None) for sink in self.sinks.values())]
        for chain in chains:
            for name, live in (chain.statistics() if chain is not None else {}).items():
                processors.setdefault(name, {}).update(live)
        out["processors"] = processors
        return out


def _without_processors(section: Any, key: str) -> Any:
    """A raw config section minus the exporters' own `processors` (those reload without a restart)."""
    if key != "exporters" or not isinstance(section, dict):
        return section
    return {name: {k: v for k, v in spec.items() if k != "processors"} if isinstance(spec, dict) else spec
            for name, spec in section.items()}

