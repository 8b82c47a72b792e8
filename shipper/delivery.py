"""Delivery: one worker per exporter takes a batch from its queue, exports it, retries, acknowledges.

Retry lives here and only here (tenacity, sleeping with `anyio.sleep`); exporters only classify:

- success: the batch is acknowledged (`exported`); an exporter that set records of it aside itself (dead-lettered
  and counted them, as the kafka exporter does a record too large for any message) returns how many from
  `export`, and those are not counted `exported`;
- `RetryableExportError` (connection errors, timeouts, `shipper.errors.RETRYABLE_STATUSES`): tried again after
  `Retry-After` when the exporter passed one (`retry_after` seconds, honoured as given), else after an
  exponential backoff with equal jitter: the n-th wait is uniform in [b/2, b] with
  b = min(max_interval, initial_interval * 2**(n-1)); each retry is counted `retried`;
- `AuthExportError` (`shipper.errors.AUTH_STATUSES`: 401, 403; also any ExportError carrying one of
  those statuses): logged as an error an operator must act on at every attempt, retried every
  `max_interval` (never hammered), dead-lettered only as `expired` when `max_elapsed` runs out;
- `PermanentExportError` (other non-2xx answers): dead-lettered at once as `rejected_by_backend`, not retried;
- any other exception (a bug in an exporter): logged with its traceback and dead-lettered as
  `exporter_error`, so one poisonous batch cannot hold the queue forever.

`retry.max_elapsed` (0: retry forever) bounds the time from the first attempt: the last wait is cut to
end at it, and a `Retry-After` reaching past it ends the retries at once. The batch is then dead-lettered
and counted `expired`. Dead-lettered batches are acknowledged: they leave the queue for the dead-letter
file (deadletter.py), from which `shipper replay` can send them again.

Before each attempt the worker drops from its batch what `when_full: drop_oldest` dropped meanwhile. A
worker holds one batch at a time, so memory is bounded by the exporter's `batch` settings.

Shutdown (`drain`): the worker stops waiting for new batches, finishes the export in flight, and keeps
sending what is queued while the backend answers; the first failure, or the pipeline's shutdown deadline,
stops it. What is unsent stays in the queue for the next start.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import anyio
from tenacity import AsyncRetrying, RetryCallState

from shipper.component import Exporter
from shipper.deadletter import DeadLetters
from shipper.errors import (
    AUTH_STATUSES,
    AuthExportError,
    ExportError,
    PermanentExportError,
    RetryableExportError,
)
from shipper.queue import DiskQueue, Item
from shipper.settings import DeliveryConfig
from shipper.stats import Counters

__all__ = ["Delivery", "backoff"]

log = logging.getLogger("shipper.delivery")

def backoff(attempt: int, initial: float, maximum: float, rand: float | None = None) -> float:
    """The wait after failed attempt number `attempt` (1-based): exponential, with equal jitter."""
    base = min(maximum, initial * 2 ** min(attempt - 1, 62))
    share = random.random() if rand is None else rand
    return float(base / 2 + base / 2 * share)


def _is_auth(exc: BaseException | None) -> bool:
    return isinstance(exc, AuthExportError) or (isinstance(exc, ExportError) and exc.status in AUTH_STATUSES)


class _Stopped(Exception):
    """The worker is draining and gave up a retry; the batch stays in the queue."""


class Delivery:
    """The delivery worker of one exporter."""

    def __init__(self, name: str, exporter: Exporter, queue: DiskQueue, deadletters: DeadLetters,
                 config: DeliveryConfig, counters: Counters) -> None:
        self.name = name
        self.exporter = exporter
        self.queue = queue
        self.deadletters = deadletters
        self.retry = config.retry
        self.batch = config.batch
        self.counters = counters
        self._state = "starting"
        self._next_attempt: float | None = None
        self._failing_since: float | None = None
        self._draining = False
        self._scope: anyio.CancelScope | None = None
        self._take_scope: anyio.CancelScope | None = None
        self._done = anyio.Event()

    def statistics(self) -> dict[str, Any]:
        """What the worker is doing, and since when it has been failing."""
        out: dict[str, Any] = {"state": self._state}
        if self._next_attempt is not None:
            out["next_attempt_in_s"] = round(max(0.0, self._next_attempt - time.monotonic()), 3)
        if self._failing_since is not None:
            out["failing_for_s"] = round(time.monotonic() - self._failing_since, 3)
        return out

    async def run(self) -> None:
        """Take, export, acknowledge, until cancelled or drained."""
        try:
            with anyio.CancelScope() as self._scope:
                while not (self._draining and not self.queue.readable()):
                    self._state = "idle"
                    with anyio.CancelScope() as self._take_scope:
                        items = await self.queue.take(self.batch.max_spans, self.batch.max_bytes,
                                                      0.0 if self._draining else self.batch.max_delay)
                    if self._take_scope.cancelled_caught:  # drain() woke us: hand out again, no delay
                        self.queue.rewind()
                        continue
                    self._state = "exporting"
                    try:
                        await self._deliver(items)
                    except _Stopped:
                        return
        finally:
            self._state = "stopped"
            self._done.set()

    async def drain(self) -> None:
        """Send what is queued while the backend answers, then stop (see the module docstring)."""
        self._draining = True
        if self._scope is None:
            return
        if self._state == "idle" and self._take_scope is not None:
            self._take_scope.cancel()
        elif self._state == "backing_off":
            self._scope.cancel()
        await self._done.wait()

    async def _deliver(self, items: list[Item]) -> None:
        retrying = AsyncRetrying(
            sleep=self._sleep,
            stop=self._stop,
            wait=self._wait,
            retry=self._should_retry,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        started = time.monotonic()
        try:
            async for attempt in retrying:
                with attempt:
                    items = self.queue.pending(items)
                    if not items:
                        return  # all dropped by drop_oldest while we waited; counted there
                    self._state = "exporting"
                    ndjson = getattr(self.exporter, "export_ndjson", None)
                    if getattr(self.exporter, "forwards_otlp", False) and any(item.forwarded for item in items):
                        set_aside = await self.exporter.export_forwarded(  # type: ignore[attr-defined]
                            [(item.payload, item.count) for item in items if item.forwarded],
                            [span for item in items if not item.forwarded for span in item.spans])
                    elif ndjson is not None:  # the exporter takes the queued lines as they are
                        set_aside = await ndjson([item.ndjson for item in items], sum(item.count for item in items))
                    else:
                        set_aside = await self.exporter.export([span for item in items for span in item.spans])
        except _Stopped:
            raise
        except PermanentExportError as exc:
            if _is_auth(exc):
                self._give_up(items, "expired", exc, started)
            else:
                self._give_up(items, "rejected_by_backend", exc, started)
        except RetryableExportError as exc:
            self._give_up(items, "expired", exc, started)
        except Exception as exc:  # an exporter's bug must not stop delivery for good
            log.exception("Exporter %s failed on a batch of %d spans with an unexpected error; dead-lettered "
                          "it. This is a bug: please report it.", self.name, sum(i.count for i in items))
            self._give_up(items, "exporter_error", exc, started)
        else:
            spans = sum(item.count for item in items) - (set_aside if isinstance(set_aside, int) else 0)
            self.counters.add("exported", spans)
            self.counters.add("export_calls")
            if self._failing_since is not None:
                log.info("Exporter %s is delivering again after %.1fs of failures.", self.name,
                         time.monotonic() - self._failing_since)
            self._failing_since = None
            self.queue.ack(items)
        finally:
            self._next_attempt = None

    def _give_up(self, items: list[Item], reason: str, exc: BaseException, started: float) -> None:
        items = self.queue.pending(items)
        records = [span for item in items for span in item.spans]
        status = getattr(exc, "status", None)
        excerpt = getattr(exc, "excerpt", "") or ""
        error = str(exc) or type(exc).__name__
        self.counters.last_error = error
        if records:
            self.deadletters.write(records, reason, status=status, error=error, excerpt=excerpt)
            self.counters.drop(reason, len(records))
            self.counters.add("dead_lettered", len(records))
        if reason == "rejected_by_backend":
            log.error("Exporter %s: the backend rejected %d spans (%s); dead-lettered them to %s. Replay "
                      "them with `shipper replay` once the cause is fixed.", self.name, len(records), error,
                      self.deadletters.path)
        elif reason == "expired":
            log.error("Exporter %s: gave up on %d spans after %.0fs of failures (retry.max_elapsed %.0fs; "
                      "last error: %s); dead-lettered them to %s.", self.name, len(records),
                      time.monotonic() - started, self.retry.max_elapsed, error, self.deadletters.path)
        self.queue.ack(items)

    # -- tenacity hooks -----------------------------------------------------------------------------

    def _should_retry(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        return isinstance(exc, RetryableExportError) or _is_auth(exc)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if _is_auth(exc):
            wait = self.retry.max_interval
        elif isinstance(exc, RetryableExportError) and exc.retry_after is not None:
            return max(0.0, float(exc.retry_after))
        else:
            wait = backoff(state.attempt_number, self.retry.initial_interval, self.retry.max_interval)
        if self.retry.max_elapsed:
            wait = min(wait, max(0.0, self.retry.max_elapsed - (state.seconds_since_start or 0.0)))
        return wait

    def _stop(self, state: RetryCallState) -> bool:
        if self._draining:
            raise _Stopped
        limit = self.retry.max_elapsed
        if not limit:
            return False
        elapsed = state.seconds_since_start or 0.0
        return elapsed >= limit or elapsed + (state.upcoming_sleep or 0.0) > limit + 1e-3

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.upcoming_sleep
        error = str(exc) or type(exc).__name__
        self.counters.add("retried")
        self.counters.last_error = error
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        if _is_auth(exc):
            log.error("Exporter %s: the backend refused our credentials (HTTP %s: %s). Check the exporter's "
                      "keys in the config and restart; retrying every %.0fs meanwhile.", self.name,
                      getattr(exc, "status", "?"), error, wait)
        else:
            log.warning("Exporter %s: attempt %d failed (%s); retrying in %.3gs.", self.name,
                        state.attempt_number, error, wait)

    async def _sleep(self, seconds: float) -> None:
        self._state = "backing_off"
        self._next_attempt = time.monotonic() + seconds
        try:
            if self._draining:
                raise _Stopped
            await anyio.sleep(seconds)
        finally:
            self._next_attempt = None
