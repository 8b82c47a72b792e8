"""Receiver `kafka`: a consumer-group member reading span messages, committing offsets once they are durable.

    receivers: {bus: {type: kafka, brokers: [host:port, ...], topics: [otlp_spans], group: shipper-gateway}}

Every daemon with the same `group` shares the topics' partitions; when one leaves or dies (its session
times out after `session_timeout`) Kafka's rebalance gives its partitions to the others. shipper adds no
protocol of its own.

Messages are decoded by `encoding` (`auto`, the default, tells them apart: `{` and `resourceSpans` is
OTLP/JSON, other `{` is shipper's record_v1 NDJSON, anything else OTLP protobuf): OTLP goes through the
same decode path as the otlp_http receiver, record_v1 through the same line decoder as the spool. A message
that cannot be decoded, or a span in it that is not a valid record, is counted and set aside in the
rejected-records log with its reason; the partition moves on past it. When the pipeline forwards OTLP
(docs/forwarding.md: no processors, every exporter `forward_otlp: true`), OTLP protobuf messages that pass
`shipper.otlp.forward.check` are handed over as they came, joined, instead of decoded.

The commit contract (component.py): each poll yields one intake per partition whose mark is the offset
after its last message. The pipeline calls `commit(mark)` once those records are in every exporter's
durable queue; only then may the offset go to Kafka (every `commit_interval`, at a revocation and at a
clean stop). So a `kill -9` re-delivers from the last committed offset: at least once, nothing lost. On
revocation the offsets that are durable are committed and the partition is forgotten: marks of it still
in flight are ignored (their records are queued anyway, and the new owner reads them again: duplicates,
not loss). Marks carry the partition's assignment epoch so a late mark never moves an offset back.
Records a tail sampler holds (sample.tail) are past the processors but not yet queued: the pipeline
defers their marks until the sampler has released them (`Pipeline._commit_ready`), so a crash re-reads
them from Kafka (committed offsets lag by up to `decision_wait`; see processors/tail.py).

Backpressure: when the pipeline's intake does not take a poll's records within `pause_after`, every
assigned partition is paused (no fetches) until it does; memory stays bounded by the client's fetch
sizes (`max_partition_fetch_bytes` per partition). `statistics()` gives per partition the committed
offset, the high watermark and the lag between them, for `shipper status` and /metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from google.protobuf.message import DecodeError

from shipper.component import Context, Deliver, Intake
from shipper.kafka import KafkaConnection, client_settings, describe_error
from shipper.otlp import forward
from shipper.otlp.decode import check_groups, decode_spans
from shipper.receivers.otlp_http import parse_json
from shipper.receivers.otlp_intake import decode_body, off_loop
from shipper.record import Record, Reject, decode_payload
from shipper.values import ByteSize, Duration

__all__ = ["KafkaReceiver", "decode_message"]

log = logging.getLogger("shipper.receivers.kafka")

Encoding = Literal["auto", "otlp_proto", "otlp_json", "record_v1"]


@dataclass(kw_only=True)
class KafkaReceiverConfig(KafkaConnection):
    """Which topics, which group, and how eagerly to read and commit."""

    topics: list[str] = field(default_factory=lambda: ["otlp_spans"])
    group: str = "shipper-gateway"
    encoding: Encoding = "auto"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = field(default=500, metadata={"min": 1})
    max_partition_fetch_bytes: ByteSize = field(default=1024 * 1024, metadata={"min": 1024})
    fetch_max_wait: Duration = field(default=0.5, metadata={"min": 0.0})
    session_timeout: Duration = field(default=10.0, metadata={"min": 1.0})
    heartbeat_interval: Duration = field(default=3.0, metadata={"min": 0.1})
    max_poll_interval: Duration = field(default=300.0, metadata={"min": 1.0})
    commit_interval: Duration = field(default=1.0, metadata={"min": 0.01})
    pause_after: Duration = field(default=0.2, metadata={"min": 0.0})
    timeout: Duration = field(default=30.0, metadata={"min": 1.0})

    def check(self) -> list[str]:
        problems = self.connection_problems()
        if not self.topics:
            problems.append("topics: expected at least one topic")
        if not self.group:
            problems.append("group: expected a consumer group name")
        if self.heartbeat_interval >= self.session_timeout:
            problems.append("heartbeat_interval: expected less than session_timeout (a third of it is usual)")
        return problems


def _kind(value: bytes) -> str:
    head = value[:256].lstrip()
    if head.startswith(b"{"):
        return "otlp_json" if b'"resourceSpans"' in head or b'"resource_spans"' in head else "record_v1"
    return "otlp_proto"


def decode_message(value: bytes | None, encoding: Encoding, max_record_bytes: int) -> tuple[list[Record], list[Reject]]:
    """The valid records of one message value and the rejects; never raises."""
    if not value:
        return [], [Reject("empty_message", "a message without a value", b"")]
    kind = _kind(value) if encoding == "auto" else encoding
    if kind == "record_v1":
        return decode_payload(value, max_record_bytes)
    try:  # protobuf: the otlp receivers' fast decoder, parsing and decoding in one
        if kind != "otlp_json":
            return decode_body(value, max_record_bytes)
        message = parse_json(value)
        check_groups(message)
    except (DecodeError, ValueError, TypeError) as exc:
        return [], [Reject(f"undecodable_{kind}", f"not an OTLP ExportTraceServiceRequest ({kind}): "
                                                  f"{str(exc)[:200]}", value[:1024])]
    except Exception as exc:  # protobuf's JSON parser raises its own ParseError (a ValueError) and others
        return [], [Reject(f"undecodable_{kind}", f"{type(exc).__name__}: {str(exc)[:200]}", value[:1024])]
    return decode_spans(message, max_record_bytes)


class _Partition:
    """What this member knows of one assigned partition."""

    __slots__ = ("committed", "durable", "epoch", "position")

    def __init__(self, epoch: int, committed: int | None) -> None:
        self.epoch = epoch
        self.committed = committed  # what Kafka has for the group
        self.durable = committed  # what the pipeline says is in every queue
        self.position: int | None = None  # the offset after the last message delivered


class KafkaReceiver:
    """One member of a consumer group; see the module docstring."""

    Config = KafkaReceiverConfig

    def __init__(self, config: KafkaReceiverConfig, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.counters = ctx.counters
        self._consumer: Any = None
        self._partitions: dict[Any, _Partition] = {}
        self._epochs = 0
        self._state = "not started"
        self._paused = False
        self._commit_lock = anyio.Lock()
        self._last_commit_error = ""

    # -- status -------------------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Group state and, per partition, the committed offset, high watermark and lag."""
        partitions: dict[str, dict[str, Any]] = {}
        total_lag = 0
        for tp, part in sorted(self._partitions.items(), key=lambda item: (item[0].topic, item[0].partition)):
            high = self._consumer.highwater(tp) if self._consumer is not None else None
            base = part.committed if part.committed is not None else 0
            lag = max(0, high - base) if high is not None else None
            total_lag += lag or 0
            partitions[f"{tp.topic}/{tp.partition}"] = {
                "committed": part.committed, "high_watermark": high, "lag": lag, "position": part.position}
        out: dict[str, Any] = {
            "group": self.config.group, "topics": ",".join(self.config.topics), "member": self._state,
            "assigned": len(self._partitions), "paused": self._paused, "lag": total_lag,
            "partitions": partitions,
        }
        if self._last_commit_error:
            out["commit_error"] = self._last_commit_error
        return out

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to bind: the group is joined in `run`, retrying while the brokers are unreachable."""

    def _new_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

        c = self.config
        return AIOKafkaConsumer(
            **client_settings(c, max(c.timeout, c.session_timeout + 5)),
            group_id=c.group,
            enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            max_poll_records=c.max_poll_records,
            max_partition_fetch_bytes=c.max_partition_fetch_bytes,
            fetch_max_wait_ms=int(c.fetch_max_wait * 1000),
            session_timeout_ms=int(c.session_timeout * 1000),
            heartbeat_interval_ms=int(c.heartbeat_interval * 1000),
            max_poll_interval_ms=int(c.max_poll_interval * 1000),
        )

    async def _start(self) -> Any:
        from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

        delay = 0.5
        while True:
            consumer = self._new_consumer()
            self._state = "connecting"
            try:
                await consumer.start()
            except (KafkaError, OSError) as exc:
                self._state = "brokers unreachable"
                log.warning("Receiver %s: cannot reach the brokers %s (%s); trying again in %.1fs.", self.ctx.name,
                            self.config.describe(), type(exc).__name__, delay)
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await consumer.stop()
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            consumer.subscribe(self.config.topics, listener=_listener(self))
            self._state = "joining"
            log.info("Receiver %s: joining consumer group %s on %s for %s.", self.ctx.name, self.config.group,
                     self.config.describe(), ", ".join(self.config.topics))
            return consumer

    async def run(self, deliver: Deliver) -> None:
        """Poll, deliver one intake per partition, commit durable offsets on a timer; until cancelled."""
        if self._consumer is None:
            self._consumer = await self._start()
        from aiokafka.errors import KafkaError

        consumer = self._consumer
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._commit_loop)
            while True:
                try:
                    polled = await consumer.getmany(timeout_ms=500, max_records=self.config.max_poll_records)
                except KafkaError as exc:  # the client reconnects on its own; never take the daemon down
                    log.warning("Receiver %s: polling failed (%s); trying again.", self.ctx.name,
                                describe_error(exc))
                    await anyio.sleep(1.0)
                    continue
                for tp, messages in polled.items():
                    part = self._partitions.get(tp)
                    if part is None or not messages:
                        continue  # revoked meanwhile: the next owner reads these again
                    await self._deliver(deliver, await self._intake(tp, part, messages))

    async def _intake(self, tp: Any, part: _Partition, messages: list[Any]) -> Intake:
        """The intake of one poll of one partition, read in a worker thread when its messages are big
        (`off_loop`), so that no poll holds the event loop."""
        forwarding = self.ctx.forwarding() if self.ctx.forwarding is not None else None
        size = sum(len(message.value or b"") for message in messages)
        records, rejects, bodies, forwarded = await off_loop(size, self.counters, self._read, tp, messages, forwarding)
        end = messages[-1].offset + 1
        part.position = end
        self.counters.add("received", len(records) + forwarded)
        self.counters.add("messages", len(messages))
        return Intake(records, rejects, (tp, end, part.epoch), f"{self.ctx.name} {tp.topic}/{tp.partition}", size,
                      b"".join(bodies), forwarded)

    def _read(self, tp: Any, messages: list[Any], forwarding: tuple[int, int] | None,
              ) -> tuple[list[Record], list[Reject], list[bytes], int]:
        """(records, rejects, otlp_proto messages handed over as they came (docs/forwarding.md), their
        span count) of `messages`; touches nothing shared, so it may run in a worker thread."""
        records: list[Record] = []
        rejects: list[Reject] = []
        bodies: list[bytes] = []
        forwarded = forwarded_bytes = 0
        for message in messages:
            value = message.value
            if forwarding is not None and value and len(value) <= forwarding[1] - forwarded_bytes and (
                    self.config.encoding == "otlp_proto"
                    or (self.config.encoding == "auto" and _kind(value) == "otlp_proto")):
                count = forward.check(value, forwarding[0] - forwarded)
                if count:
                    bodies.append(value)
                    forwarded += count
                    forwarded_bytes += len(value)
                    continue
            got, bad = decode_message(value, self.config.encoding, self.ctx.max_record_bytes)
            records.extend(got)
            rejects.extend(Reject(r.reason, f"{tp.topic}/{tp.partition}@{message.offset}: {r.detail}", r.line)
                           for r in bad)
        return records, rejects, bodies, forwarded

    async def _deliver(self, deliver: Deliver, intake: Intake) -> None:
        with anyio.move_on_after(self.config.pause_after) as scope:
            await deliver(intake)
        if not scope.cancelled_caught:
            return
        consumer = self._consumer
        assigned = list(consumer.assignment())
        consumer.pause(*assigned)
        self._paused = True
        self.counters.add("paused")
        log.info("Receiver %s: the pipeline's intake is full; paused %d partitions.", self.ctx.name, len(assigned))
        try:
            await deliver(intake)
        finally:
            self._paused = False
            consumer.resume(*consumer.paused())

    async def commit(self, mark: Any) -> None:
        """Note that a partition's records before `mark` are durable; sent to Kafka on the commit timer."""
        tp, offset, epoch = mark
        part = self._partitions.get(tp)
        if part is None or part.epoch != epoch:
            return  # revoked since: its new owner reads from what was committed
        if part.durable is None or offset > part.durable:
            part.durable = offset

    async def _commit_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.commit_interval)
            await self._commit(list(self._partitions))

    async def _commit(self, tps: list[Any]) -> None:
        """Commit the durable offsets of `tps` that moved; failures are logged (the next try covers them)."""
        from aiokafka.errors import KafkaError

        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets = {}
            for tp in tps:
                part = self._partitions.get(tp)
                if part is not None and part.durable is not None and (part.committed is None
                                                                      or part.durable > part.committed):
                    offsets[tp] = part.durable
            if not offsets:
                return
            try:
                with anyio.fail_after(self.config.timeout):
                    await consumer.commit(offsets)
            except (KafkaError, TimeoutError) as exc:
                self._last_commit_error = describe_error(exc)[:300]
                log.warning("Receiver %s: committing offsets failed (%s); the records are safe in the queues and "
                            "will be committed later, or read again by this partition's next owner.",
                            self.ctx.name, self._last_commit_error)
                return
            self._last_commit_error = ""
            self.counters.add("commits")
            for tp, offset in offsets.items():
                part = self._partitions.get(tp)
                if part is not None:
                    part.committed = max(part.committed or 0, offset)

    async def _revoked(self, revoked: Any) -> None:
        self._state = "rebalancing"
        await self._commit(list(revoked))
        for tp in revoked:
            self._partitions.pop(tp, None)
        if revoked:
            log.info("Receiver %s: %d partitions revoked (durable offsets committed).", self.ctx.name, len(revoked))

    async def _assigned(self, assigned: Any) -> None:
        consumer = self._consumer
        for tp in assigned:
            self._epochs += 1
            try:
                committed = await consumer.committed(tp)
            except Exception:  # only a figure for status: it must not fail the assignment
                committed = None
            self._partitions[tp] = _Partition(self._epochs, committed)
        self._state = "member"
        log.info("Receiver %s: assigned %s.", self.ctx.name,
                 ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)) or "no partitions")

    async def aclose(self) -> None:
        """Commit what is durable, then leave the group (its partitions move at once). Idempotent."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        with anyio.CancelScope(shield=True):
            self._consumer = consumer
            with anyio.move_on_after(min(self.config.timeout, 5)):
                await self._commit(list(self._partitions))
            self._consumer = None
            with anyio.move_on_after(min(self.config.timeout, 10)):
                await consumer.stop()
        self._state = "stopped"


def _listener(receiver: KafkaReceiver) -> Any:
    """aiokafka's rebalance callbacks, forwarded to the receiver (the class needs aiokafka imported)."""
    from aiokafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await receiver._revoked(revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await receiver._assigned(assigned)

    return Listener()
