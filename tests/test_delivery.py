"""Delivery workers against a real OTLP/HTTP server: retry, Retry-After, max_elapsed, dead letters, drain."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from shipper import registry
from shipper.chain import Chain
from shipper.component import Context
from shipper.config import build_exporter_config
from shipper.delivery import backoff
from shipper.sink import QueuedSink
from shipper.stats import Counters
from shipper.testing import OTLPServer, Reply, await_until, build_exporter, make_span


def make_sink(state: Path, exporter_type: str = "otlp_http", **settings: Any) -> QueuedSink:
    """A queued sink over a real exporter built from YAML-like settings, as the daemon builds it."""
    base = {"retry": {"initial_interval": "10ms", "max_interval": "50ms"}, "batch": {"max_delay": 0}}
    exporter, delivery, ctx = build_exporter(exporter_type, {**base, **settings}, state, name="backend")
    return QueuedSink("backend", exporter, Chain([]), ctx, delivery)


def spans(n: int) -> list[dict[str, Any]]:
    return [make_span(trace=1, span=i + 1, name=f"s{i}") for i in range(n)]


def dead_letters(state: Path) -> list[dict[str, Any]]:
    path = state / "deadletter" / "backend.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def test_503_twice_then_200_delivers_once_and_counts_retries(tmp_path: Path) -> None:
    """Retryable answers are retried with backoff; the batch is acknowledged once the backend takes it."""
    with OTLPServer(Reply.status(503), Reply.status(503)) as server:
        sink = make_sink(tmp_path, endpoint=server.url)
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await sink.put(spans(3))
            await await_until(lambda: sink.counters.counts["exported"] == 3)
            tg.cancel_scope.cancel()
        await sink.aclose()
        assert len(server.requests) == 3
        assert [s["name"] for s in server.requests[-1].spans] == ["s0", "s1", "s2"]
        assert sink.counters.counts["retried"] == 2
        assert sink.statistics()["queue_items"] == 0


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    """A 429 with `Retry-After: 1` schedules the next attempt a second on, though the backoff is 10 ms."""
    with OTLPServer(Reply.retry_after(1)) as server:
        sink = make_sink(tmp_path, endpoint=server.url)
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await sink.put(spans(1))
            backing_off = await await_until(lambda: sink.delivery.statistics().get("next_attempt_in_s"))
            await await_until(lambda: sink.counters.counts["exported"] == 1)
            tg.cancel_scope.cancel()
        await sink.aclose()
        assert len(server.requests) == 2
    assert 0.5 < backing_off <= 1.0, backing_off  # the scheduled wait: Retry-After's, not the 10 ms backoff
    assert sink.counters.counts["retried"] == 1


async def test_max_elapsed_expires_and_dead_letters(tmp_path: Path) -> None:
    """A backend down for longer than retry.max_elapsed: the batch is dead-lettered and counted expired."""
    with OTLPServer(default=Reply.status(503, "down for maintenance")) as server:
        sink = make_sink(tmp_path, endpoint=server.url,
                         retry={"initial_interval": "20ms", "max_interval": "100ms", "max_elapsed": "500ms"})
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await sink.put(spans(2))
            await await_until(lambda: sink.counters.dropped.get("expired") == 2)
            tg.cancel_scope.cancel()
        await sink.aclose()
        attempts = len(server.requests)
    # Retried until max_elapsed (20 ms doubling to 100 ms waits fill 500 ms only after several), then given
    # up: every attempt but the first was a counted retry, and the batch expired once.
    assert attempts >= 4 and sink.counters.counts["retried"] == attempts - 1, attempts
    [letter] = dead_letters(tmp_path)
    assert letter["reason"] == "expired" and letter["status"] == 503 and letter["count"] == 2
    assert [r["name"] for r in letter["records"]] == ["s0", "s1"]
    assert sink.statistics()["queue_items"] == 0


async def test_retry_after_beyond_max_elapsed_expires_at_once(tmp_path: Path) -> None:
    """A Retry-After that reaches past max_elapsed ends the retries now instead of sleeping past it."""
    with OTLPServer(default=Reply.retry_after(60, code=503)) as server:
        sink = make_sink(tmp_path, endpoint=server.url, retry={"max_elapsed": "5s"})
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await sink.put(spans(1))
            await await_until(lambda: sink.counters.dropped.get("expired") == 1, timeout=3)
            tg.cancel_scope.cancel()
        await sink.aclose()
        assert len(server.requests) == 1


async def test_400_is_dead_lettered_with_its_body_and_not_retried(tmp_path: Path) -> None:
    """A permanent answer: one request, the batch dead-lettered with the backend's body excerpt."""
    with OTLPServer(Reply.status(400, "invalid span: name too long")) as server:
        sink = make_sink(tmp_path, endpoint=server.url)
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await sink.put(spans(2))
            await await_until(lambda: sink.counters.dropped.get("rejected_by_backend") == 2)
            await sink.put(spans(1))  # the queue moves on
            await await_until(lambda: sink.counters.counts["exported"] == 1)
            tg.cancel_scope.cancel()
        await sink.aclose()
        assert len(server.requests) == 2
    [letter] = dead_letters(tmp_path)
    assert letter["reason"] == "rejected_by_backend" and letter["status"] == 400
    assert "invalid span: name too long" in letter["excerpt"]
    assert sink.counters.counts["dead_lettered"] == 2 and not sink.counters.counts["retried"]


async def test_401_is_loud_and_backed_off_to_max_interval(tmp_path: Path, caplog) -> None:
    """Refused credentials are logged as errors and retried every max_interval, never hammered."""
    caplog.set_level(logging.ERROR, logger="shipper.delivery")
    with OTLPServer(default=Reply.status(401, "bad key")) as server:
        sink = make_sink(tmp_path, endpoint=server.url,
                         retry={"initial_interval": "1ms", "max_interval": "300ms"})
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await sink.put(spans(1))
            await await_until(lambda: len(server.requests) >= 2)  # a second refusal: the wait after it is set
            scheduled = await await_until(lambda: sink.delivery.statistics().get("next_attempt_in_s"))
            server.default = Reply.ok()
            await await_until(lambda: sink.counters.counts["exported"] == 1)
            tg.cancel_scope.cancel()
        await sink.aclose()
    assert 0.1 < scheduled <= 0.3, scheduled  # max_interval (300 ms), not the 1 ms backoff
    assert any("refused our credentials" in r.getMessage() for r in caplog.records)
    assert not dead_letters(tmp_path)


async def test_drain_stops_at_the_first_failure_and_keeps_the_queue(tmp_path: Path) -> None:
    """At shutdown a worker backing off stops at once; what is unsent stays queued for the next start."""
    with OTLPServer(default=Reply.status(503)) as server:
        sink = make_sink(tmp_path, endpoint=server.url, retry={"initial_interval": "10s", "max_interval": "10s"})
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await sink.put(spans(4))
            await await_until(lambda: sink.delivery.statistics()["state"] == "backing_off")
            with anyio.fail_after(2):
                await sink.drain()
            tg.cancel_scope.cancel()
        assert sink.statistics()["queue_items"] == 4
        await sink.aclose()
    again = make_sink(tmp_path, endpoint="http://127.0.0.1:9")
    await again.open()
    assert again.statistics()["queue_items"] == 4
    await again.aclose()


async def test_drain_sends_what_is_queued_while_the_backend_answers(tmp_path: Path) -> None:
    """At shutdown a healthy worker empties its queue without waiting for batches to fill."""
    with OTLPServer() as server:
        sink = make_sink(tmp_path, endpoint=server.url, batch={"max_spans": 2, "max_delay": "10s"})
        await sink.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await await_until(lambda: sink.delivery.statistics()["state"] == "idle")
            await sink.put(spans(5))
            with anyio.fail_after(5):
                await sink.drain()
            tg.cancel_scope.cancel()
        await sink.aclose()
        assert len(server.spans()) == 5


class Broken:
    """An exporter with a bug: it raises something that is not an ExportError."""

    Config = registry.load("exporters", "file").Config

    def __init__(self, config: Any, ctx: Context) -> None:
        self.config = config

    async def open(self) -> None: ...

    async def export(self, batch: list[dict[str, Any]]) -> None:
        raise KeyError("llm")

    async def aclose(self) -> None: ...


async def test_an_exporter_bug_dead_letters_the_batch(tmp_path: Path) -> None:
    """An unexpected exception does not kill the worker: the batch is dead-lettered as exporter_error."""
    config, delivery = build_exporter_config(Broken.Config, {}, "", [])
    ctx = Context(name="backend", state_dir=tmp_path, counters=Counters())
    sink = QueuedSink("backend", Broken(config, ctx), Chain([]), ctx, delivery)
    await sink.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.run)
        await sink.put(spans(2))
        await await_until(lambda: sink.counters.dropped.get("exporter_error") == 2)
        tg.cancel_scope.cancel()
    await sink.aclose()
    assert dead_letters(tmp_path)[0]["reason"] == "exporter_error"


@pytest.mark.parametrize("attempt", [1, 2, 5, 40])
def test_backoff_is_exponential_with_equal_jitter(attempt: int) -> None:
    """The n-th wait lies in [b/2, b], b = min(max, initial * 2**(n-1))."""
    base = min(30.0, 1.0 * 2 ** (attempt - 1))
    assert backoff(attempt, 1.0, 30.0, rand=0.0) == base / 2
    assert backoff(attempt, 1.0, 30.0, rand=1.0) == base
    assert base / 2 <= backoff(attempt, 1.0, 30.0) <= base
