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
and report the problems; else apply every change between two batches (reload.py: processors, exporters,
receivers, settings, metrics) and report what changed and what could not be applied.
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
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shipper import registry
from shipper.batching import batches
from shipper.chain import Chain, build_chain
from shipper.component import Context, Deliver, Intake, Receiver
from shipper.config import Config, load_config
from shipper.errors import ConfigError
from shipper.intake import IntakeBudget
from shipper.otlp import forward
from shipper.queue import encode_lines
from shipper.record import Record
from shipper.rejects import RejectLog
from shipper.reload import ReloadReport
from shipper.settings import DeliveryConfig
from shipper.sink import QueuedSink
from shipper.stats import Stats, process_rss_bytes

__all__ = ["Pipeline"]

SLICE_SPANS = 8192
"""Records processed and queued in one stretch of the event loop: a batch of more (one big OTLP request)
is taken in slices, with the loop free in between."""

log = logging.getLogger("shipper.pipeline")

RATE_INTERVAL = 10.0
"""Seconds between the counter samples behind the rates per second of `shipper status`."""

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
        self.raw_taps: list[Callable[[list[Record]], None]] = []  # `shipper tail --raw`: before processing
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
        self._swap: anyio.Lock | None = None  # held by each batch and by a reload's swap: one, then the other
        self._tg: Any = None
        self._receiver_tg: Any = None
        self._scopes: dict[tuple[str, str], anyio.CancelScope] = {}
        self._done: dict[tuple[str, str], anyio.Event] = {}
        self.opened: dict[str, dict[str, Any]] = {"receivers": {}, "exporters": {}}
        self._batch_changed = False
        self.metrics_server: Any = None  # set by metrics.install
        self._samples: deque[tuple[float, dict[str, Any]]] = deque([(time.monotonic(), {})], maxlen=3)
        self._build()

    def _context(self, section: str, name: str, max_record_bytes: int | None = None) -> Context:
        return Context(name=name, state_dir=self.state_dir, counters=self.stats.component(section, name),
                       max_record_bytes=max_record_bytes or self.settings.max_record_bytes, intake=self.budget,
                       forwarding=self.forward_limits)

    def _build(self) -> None:
        for spec in self.config.receivers:
            self.receivers[spec.name] = self.make_receiver(spec)
        self.chain, own = self._chains(self.config)
        for spec in self.config.exporters:
            self.sinks[spec.name] = self.make_sink(spec, own[spec.name])

    def make_receiver(self, spec: Any, max_record_bytes: int | None = None) -> Any:
        """The (unopened) receiver of `spec`; at start and when a reload adds or changes one."""
        cls = registry.load("receivers", spec.type)
        return cls(spec.config, self._context("receivers", spec.name, max_record_bytes))

    def make_sink(self, spec: Any, chain: Chain, max_record_bytes: int | None = None) -> QueuedSink:
        """The (unopened) sink of exporter `spec` with its own processors `chain`; at start and at a reload."""
        cls = registry.load("exporters", spec.type)
        ctx = self._context("exporters", spec.name, max_record_bytes)
        return QueuedSink(spec.name, cls(spec.config, ctx), chain, ctx, spec.delivery or DeliveryConfig())

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
        self._swap = anyio.Lock()
        opened_sinks = self.opened["exporters"]
        opened_receivers = self.opened["receivers"]
        try:
            for name, sink in self.sinks.items():
                await sink.open()
                opened_sinks[name] = sink
            for name, receiver in self.receivers.items():
                await receiver.open()
                opened_receivers[name] = receiver
            for opener in self.openers:
                await opener()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._process, receive)
                intake = anyio.CancelScope()
                await tg.start(self._run_receivers, intake)
                await tg.start(self._signals, tg.cancel_scope)  # handlers in place before "ready"
                tg.start_soon(self._sample_rates)
                for name, sink in self.sinks.items():
                    self.start_sink(name, sink)
                for service in self.services:
                    self.start_service(service)
                from shipper.status_text import plural

                log.info("shipper is ready: %s, %s, config %s.", plural(len(self.receivers), "receiver"),
                         plural(len(self.sinks), "exporter"), self.config.source)
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
                for sink in list(opened_sinks.values()):
                    await sink.aclose()
                for receiver in list(opened_receivers.values()):
                    await receiver.aclose()
                opened_sinks.clear()
                opened_receivers.clear()
            log.info("shipper stopped.")

    def stop(self) -> None:
        """Begin the shutdown sequence."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def _run_receivers(self, scope: anyio.CancelScope, *,
                             task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                self._receiver_tg = tg
                tg.start_soon(anyio.sleep_forever)  # the group outlives its receivers: a reload adds some
                for name, receiver in self.receivers.items():
                    self.start_receiver(name, receiver)
                task_status.started()

    def start_receiver(self, name: str, receiver: Any) -> None:
        """Run an opened receiver in a cancel scope of its own (so a reload can stop just this one)."""
        scope = self._scopes[("receivers", name)] = anyio.CancelScope()
        done = self._done[("receivers", name)] = anyio.Event()

        async def run() -> None:
            try:
                with scope:
                    await self._supervise(name, receiver)
            finally:
                done.set()
        self._receiver_tg.start_soon(run)

    def start_service(self, service: Service) -> None:
        """Run a service (the metrics server, ...) in a cancel scope of its own; `stop_service` ends it."""
        scope = self._scopes[("services", str(id(service)))] = anyio.CancelScope()

        async def run() -> None:
            with scope:
                await service(self)
        self._tg.start_soon(run)

    def stop_service(self, service: Service) -> None:
        """Cancel a service started by `start_service`."""
        scope = self._scopes.pop(("services", str(id(service))), None)
        if scope is not None:
            scope.cancel()

    def start_sink(self, name: str, sink: Any) -> None:
        """Run an opened sink's delivery worker in a cancel scope of its own."""
        scope = self._scopes[("exporters", name)] = anyio.CancelScope()
        done = self._done[("exporters", name)] = anyio.Event()

        async def run() -> None:
            try:
                with scope:
                    await sink.run()
            finally:
                done.set()
        self._tg.start_soon(run)

    async def stop_component(self, section: str, name: str) -> None:
        """Cancel one receiver's or sink's task and close it (a sink's queue stays on disk)."""
        scope = self._scopes.pop((section, name), None)
        done = self._done.pop((section, name), None)
        component = self.opened[section].get(name)
        drain = getattr(component, "drain", None) if section == "receivers" else None
        if drain is not None and scope is not None:  # unix_socket: stop accepting, read what is queued
            with anyio.move_on_after(self.settings.shutdown_timeout):
                await drain()
        if scope is not None:
            scope.cancel()
        if done is not None:
            await done.wait()  # the task has unwound (a receiver has handed over what it read)
        component = self.opened[section].pop(name, None)
        if component is not None:
            with anyio.CancelScope(shield=True):
                await component.aclose()

    def swapping(self) -> anyio.Lock:
        """The lock a reload holds while it swaps components: no batch is in flight meanwhile."""
        if self._swap is None:
            self._swap = anyio.Lock()
        return self._swap

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
            # Shielded: a receiver stopped (at a reload, or at shutdown) while it hands over what it has
            # already read finishes the hand-over first, so those records are not lost. Bounded: the
            # pipeline keeps consuming (and closing the stream at shutdown ends the wait), and at worst
            # `shutdown_timeout` ends it.
            count = intake.count
            with anyio.move_on_after(self.settings.shutdown_timeout, shield=True) as handover:
                await budget.wait_room()
                budget.take(count, intake.size)
                try:
                    await self._send.send((receiver, intake))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    budget.give_back(count, intake.size)
                    log.warning("Shutting down: %d records %s had just read were not taken in.", count,
                                intake.source)
                except BaseException:
                    budget.give_back(count, intake.size)
                    raise
            if handover.cancelled_caught:
                log.warning("%d records %s had read were not taken in within shutdown_timeout.", count,
                            intake.source)
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
        from contextlib import aclosing

        try:
            ended = False
            while not ended:
                settings = self.settings.batch  # a reload that changes `batch` restarts this loop
                self._batch_changed = False
                ended = True
                async with aclosing(batches(  # type: ignore[type-var]  # an async generator: has aclose
                    receive,
                    max_items=settings.max_spans,
                    max_bytes=settings.max_bytes,
                    max_delay=settings.max_delay,
                    size_of=lambda item: (item[1].count, item[1].size),
                    idle_tick=max(settings.max_delay, 0.05),
                    waited=lambda item: getattr(item[0], "answers_senders", False),
                )) as stream:
                    async for batch in stream:
                        await self._handle(batch)
                        if self._batch_changed:  # between two batches: the batcher holds nothing
                            ended = False
                            break
            await self._flush_held(force=True)
        finally:
            assert self._drained is not None
            self._drained.set()

    async def _handle(self, batch: list[tuple[Receiver, Intake]]) -> None:
        async with self.swapping():
            await self._handle_batch(batch)

    async def _handle_batch(self, batch: list[tuple[Receiver, Intake]]) -> None:
        if not batch:
            await self._flush_held(force=False)
            return
        try:
            await self._queue(batch)
        finally:
            for _, intake in batch:
                self.budget.give_back(intake.count, intake.size)

    def forward_limits(self) -> tuple[int, int] | None:
        """(max spans, max bytes) of an OTLP request a receiver may hand over as it came, or None.

        Forwarding (docs/forwarding.md) holds while no shared processor is configured and every exporter
        forwards OTLP unchanged with no processors of its own; the limits are the smallest queue record's,
        so a forwarded request is always one queue record."""
        if self.chain.processors or not self.sinks:
            return None
        sinks = self.sinks.values()
        if not all(sink.forwards_otlp for sink in sinks):
            return None
        return (min(sink.queue.record_spans for sink in sinks), min(sink.queue.record_bytes for sink in sinks))

    async def _queue(self, batch: list[tuple[Receiver, Intake]]) -> None:
        records: list[Record] = []
        forwarded: list[Intake] = []
        for _, intake in batch:
            if intake.rejects:
                self._reject(intake)
            records.extend(intake.records)
            if intake.otlp:
                forwarded.append(intake)
        if forwarded:
            forwarded = self._forwardable(forwarded, records)
        forwarded_spans = sum(intake.otlp_spans for intake in forwarded)
        self.counters.add("received", len(records) + forwarded_spans)
        if forwarded_spans:
            self.counters.add("forwarded", forwarded_spans)
        shown: list[Record] = []  # `shipper tail` sees forwarded spans too, decoded only for it
        if forwarded and (self.raw_taps or self.taps):
            limit = self.settings.max_record_bytes
            shown = [r for intake in forwarded for r in forward.decode(intake.otlp, limit)[0]]
        for tap in self.raw_taps:
            tap(records + shown if shown else records)
        chain = self.chain  # one chain per batch, so a reload swaps between batches
        processed = 0
        for start in range(0, len(records), SLICE_SPANS):
            if start:  # a big request's records: the event loop runs between slices
                await anyio.lowlevel.checkpoint()
            part = records if len(records) <= SLICE_SPANS else records[start:start + SLICE_SPANS]
            processed += await self._queue_slice(chain, part, shown)
            shown = []
        for sink in self.sinks.values():
            for intake in forwarded:
                await sink.put_forwarded(intake.otlp, intake.otlp_spans)
        if shown:
            for tap in self.taps:
                tap(shown)
        self.counters.add("processed", processed + forwarded_spans)
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

    async def _queue_slice(self, chain: Chain, records: list[Record], shown: list[Record]) -> int:
        """Process `records` and put them in every exporter's queue; `shown`: forwarded spans the taps
        see beside them. Returns how many came out of the processors."""
        processed = chain(records)
        for tap in self.taps:
            tap(processed + shown if shown else processed)
        if not processed:
            return 0
        sinks = self.sinks.values()
        lines = None
        if sum(getattr(sink, "passes_through", False) for sink in sinks) > 1:
            lines = encode_lines(processed)  # once for every exporter without processors of its own
        for sink in sinks:
            await sink.put(list(processed) if len(self.sinks) > 1 else processed, lines)
        return len(processed)

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

    def _forwardable(self, intakes: list[Intake], records: list[Record]) -> list[Intake]:
        """The intakes that can still be queued as they came; the others' spans are decoded into `records`
        (a reload between their hand-over and now turned forwarding off, or made a queue record smaller)."""
        limits = self.forward_limits()
        if limits is not None and all(i.otlp_spans <= limits[0] and len(i.otlp) <= limits[1] for i in intakes):
            return intakes
        for intake in intakes:
            decoded, rejects = forward.decode(intake.otlp, self.settings.max_record_bytes)
            records.extend(decoded)
            if rejects:
                self._reject(Intake([], rejects, source=intake.source))
        return []

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

    async def reload(self, wanted: str | None = None) -> ReloadReport:
        """Re-read the config and apply what changed (reload.py); `wanted`: the file the caller means.

        The daemon reloads only from the file it runs with: a `wanted` that is another file is refused,
        so `shipper reload -c FILE` never reports success after reading something else (and the control
        socket cannot make the daemon read a file it was not handed).
        """
        if self._reload_lock is None:
            self._reload_lock = anyio.Lock()
        async with self._reload_lock:  # a second SIGHUP waits for the first reload
            self._emit("reloading")
            try:
                report = await self._reload(wanted)
            finally:
                self._emit("ready")
        if report.ok:
            self.counters.add("reloads")
            log.info("Reloaded %s: %s.", report.source, "; ".join(report.changes) or "nothing changed")
        elif report.changes:
            log.error("Reloaded %s in part: %s. Not applied: %s", report.source, "; ".join(report.changes),
                      "; ".join(report.problems))
        else:
            log.error("Reload refused, the running config stays: %s", "; ".join(report.problems))
        return report

    async def _reload(self, wanted: str | None) -> ReloadReport:
        from shipper import security
        from shipper.reload import ReloadReport, apply

        source = self.config_path or self.config.source
        if wanted is not None and not _same_file(wanted, self.config_path):
            running = self.config_path or "its embedded default config"
            return ReloadReport(wanted, problems=[
                f"this daemon runs {running} and reloads only from it, not from {wanted}; edit that file "
                f"and reload, or restart the daemon with -c {wanted}"])
        try:
            new = load_config(self.config_path)
            security.check_startup(new, self.config_path)
        except ConfigError as exc:
            return ReloadReport(str(source), problems=list(exc.problems))
        security.remember(secret.reveal() for _, secret in security.secrets_in(new))
        try:
            return await apply(self, new)
        except Exception as exc:  # a bug in a component's open/close must not take the daemon down
            log.exception("Reload of %s failed part way.", new.source)
            return ReloadReport(new.source, problems=[f"the reload failed part way ({type(exc).__name__}: {exc}); "
                                                      "see the daemon's log; a restart applies the file"])

    # -- status -------------------------------------------------------------------------------------

    async def _sample_rates(self) -> None:
        while True:
            await anyio.sleep(RATE_INTERVAL)
            self._samples.append((time.monotonic(), self.stats.snapshot()))

    def rates(self) -> tuple[dict[str, Any], float]:
        """Per-second rates per component over the last sample interval (at least 1 s), and that interval."""
        from shipper.status_text import rates

        now = time.monotonic()
        at, old = next(((t, s) for t, s in reversed(self._samples) if now - t >= 1.0), self._samples[0])
        return rates(old, self.stats.snapshot(), now - at), now - at

    def status(self) -> dict[str, Any]:
        """Counts and live figures per component, for `shipper status`."""
        snapshot = self.stats.snapshot()
        out: dict[str, Any] = {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "rss_bytes": process_rss_bytes(),
            "config": self.config.source,
            "state_dir": str(self.state_dir),
            "pipeline": {**snapshot.get("pipeline", {}).get("intake", {}),
                         "tail_watchers": len(self.taps) + len(self.raw_taps), **self.budget.statistics()},
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


def _same_file(wanted: str, running: str | None) -> bool:
    if running is None:
        return False
    try:
        return os.path.samefile(wanted, running)
    except OSError:
        return os.path.abspath(wanted) == os.path.abspath(running)

