"""Exporter `kafka`: batches to a Kafka topic, keyed by trace id, so a gateway tier sees whole traces.

    exporters: {bus: {type: kafka, brokers: [host:port, ...], topic: otlp_spans}}

Encodings (`encoding`):
- `otlp_proto` (default): each message value is one OTLP `ExportTraceServiceRequest` in protobuf, the
  bytes the OpenTelemetry Collector's kafka exporter writes, so a Collector's kafka receiver reads them;
  which attributes the spans carry is decided as for `otlp_http`, by the same `conventions` and
  `tool_content` keys (the same mapping code). The bytes are written by `shipper.otlp.wire`, as the
  OTLP/HTTP exporters' are (sharing per-span parts with them while they are open too);
- `record_v1`: NDJSON of shipper records, lossless between shippers (`llm`, `input`, `output` as they
  are, no trip through attributes).

Per batch: the spans are grouped by the partition their trace id maps to (the Java client's murmur2
partitioner over the topic's partitions) and by `project`; each group becomes one message, keyed by the
trace id of its first trace (every trace in it maps to the same partition, so the key agrees with where
the message is). A group whose value is over `max_message_bytes` is split in halves, whole traces first,
until each part fits; a single record over it cannot be sent: once the rest of the batch is
acknowledged it is dead-lettered with reason `too_large` and counted `dead_lettered`, not `exported` (export
returns how many it set aside; an attempt that fails dead-letters nothing, so a retried batch
dead-letters them once). Messages are sent with `acks` (default all) and
`compression`; the batch succeeds once the broker acknowledged every message.

Failures are classified like any backend's, for the durable queue and the delivery worker: a broker that
cannot be reached, times out or has no leader is retryable (the queue absorbs the outage); authentication
or authorization refused carries status 401/403 (retried slowly, logged as needing an operator); a message
the broker finds too large is permanent (lower `max_message_bytes`). A retried batch does not send again
the messages the broker already acknowledged (remembered for the last few thousand), so an outage adds
few duplicates; delivery stays at least once. The SASL password is a Secret: never in status or logs.
`statistics()` gives the broker state for `shipper status` and /metrics.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import anyio
import orjson

from shipper.component import Context
from shipper.deadletter import DeadLetters
from shipper.errors import PermanentExportError, RetryableExportError
from shipper.exporters.otlp_http import mappers as otlp_mappers
from shipper.kafka import KafkaConnection, client_settings, describe_error, partition_of
from shipper.otlp import wire
from shipper.otlp.encode import Encoder
from shipper.otlp.semconv import PROJECT_NAME, Attributes
from shipper.record import Record
from shipper.settings import ExporterCommon
from shipper.values import ByteSize

__all__ = ["KafkaExporter"]

log = logging.getLogger("shipper.exporters.kafka")

_MEMO = 4096


@dataclass(kw_only=True)
class KafkaExporterConfig(ExporterCommon, KafkaConnection):
    """Which topic, how messages are encoded, compressed, acknowledged and sized."""

    topic: str = "otlp_spans"
    encoding: Literal["otlp_proto", "record_v1"] = "otlp_proto"
    conventions: list[Literal["genai", "openinference", "gen_ai_legacy"]] = field(
        default_factory=lambda: ["genai", "openinference"])
    tool_content: bool = False
    acks: Literal["all", 1, 0] = "all"
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "gzip"
    max_message_bytes: ByteSize = field(default=1_000_000, metadata={"min": 1024})

    def check(self) -> list[str]:
        problems = self.connection_problems()
        if not self.topic:
            problems.append("topic: expected a topic name")
        if self.compression in ("lz4", "zstd", "snappy") and not problems:
            from aiokafka import codec  # type: ignore[import-untyped]

            if not getattr(codec, f"has_{self.compression}")():
                problems.append(f"compression: {self.compression} needs cramjam: pip install 'shipper[kafka]'")
        return problems


def _project_resource(project: str | None) -> Attributes:
    return {PROJECT_NAME: project} if project else {}


class KafkaExporter:
    """Produces batches to a topic, one message per partition group of traces."""

    Config = KafkaExporterConfig

    def __init__(self, config: KafkaExporterConfig, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.counters = ctx.counters
        self.encoder = Encoder(otlp_mappers(cast(Any, config)), _project_resource)  # same keys, same mapping
        self.deadletters = DeadLetters(ctx.state_dir / "deadletter", ctx.name)
        self._producer: Any = None
        self._partitions: int = 0
        self._state = "not connected yet"
        self._since = time.time()
        self._last_error = ""
        self._sent: OrderedDict[bytes, None] = OrderedDict()
        self._lock = anyio.Lock()

    def statistics(self) -> dict[str, Any]:
        """Broker state for `shipper status`: up/down since when, topic, its partition count
        (`topic_partitions`: `partitions` is a kafka receiver's per-partition table), brokers known."""
        known = 0
        if self._producer is not None:
            try:
                known = len(self._producer.client.cluster.brokers())
            except Exception:  # a live figure must never break status
                known = 0
        out: dict[str, Any] = {
            "broker": self._state, "broker_up": int(self._state == "up"), "broker_state_for_s": round(time.time() - self._since, 1),
            "brokers": self.config.describe(), "topic": self.config.topic, "topic_partitions": self._partitions,
            "brokers_known": known, "encoding": self.config.encoding,
        }
        if self._last_error:
            out["broker_error"] = self._last_error
        return out

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self._state:
            self._since = time.time()
            if state == "up" and self._state.startswith("down"):
                log.info("Exporter %s: the brokers at %s answer again.", self.ctx.name, self.config.describe())
        self._state = state
        self._last_error = error

    async def open(self) -> None:
        """Nothing to connect yet: the producer starts at the first batch, so a broker that is down at
        start is an outage the queue absorbs, not a daemon that will not start. With `otlp_proto`, count
        among the exporters that share encoded span parts (shipper.otlp.wire)."""
        if self.config.encoding == "otlp_proto":
            wire.join(self)

    async def _ensure_producer(self) -> Any:
        if self._producer is not None:
            return self._producer
        from aiokafka import AIOKafkaProducer

        c = self.config
        producer = AIOKafkaProducer(
            **client_settings(c, c.timeout),
            acks=c.acks,
            compression_type=None if c.compression == "none" else c.compression,
            max_request_size=max(1024 * 1024, c.max_message_bytes + 64 * 1024),
            max_batch_size=max(16384, min(c.max_message_bytes + 1024, 1024 * 1024)),
            linger_ms=0,
            enable_idempotence=False,
        )
        try:
            with anyio.fail_after(c.timeout):
                await producer.start()
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await producer.stop()
            raise
        self._producer = producer
        return producer

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await producer.stop()
                except Exception:
                    pass

    # -- encoding -----------------------------------------------------------------------------------

    def _encode(self, records: list[Record], project: str | None) -> bytes:
        if self.config.encoding == "record_v1":
            return b"\n".join(map(orjson.dumps, records)) + b"\n"
        # the bytes of encoder.request(records, project).SerializeToString(), written a third cheaper
        return wire.request_bytes(self.encoder, records, project, wire.PARTS if wire.shared() else None)

    def _fit(self, records: list[Record], project: str | None, out: list[tuple[list[Record], bytes]],
             oversize: list[Record]) -> None:
        """Encode `records`, halving (between traces first) until each value fits max_message_bytes."""
        value = self._encode(records, project)
        if len(value) <= self.config.max_message_bytes:
            out.append((records, value))
            return
        if len(records) == 1:
            oversize.append(records[0])
            return
        cut = _trace_boundary(records)
        self._fit(records[:cut], project, out, oversize)
        self._fit(records[cut:], project, out, oversize)

    def messages(self, batch: list[Record], partitions: int) -> tuple[list[tuple[int, bytes, bytes]], list[Record]]:
        """(partition, key, value) per message of `batch`, and the records too large to send."""
        if self.config.encoding == "otlp_proto":
            batch = wire.trace_wide(batch)
        groups: dict[tuple[int, str | None], list[Record]] = {}
        for rec in sorted(batch, key=lambda r: r["trace_id"]):  # a trace's spans side by side
            where = (partition_of(rec["trace_id"].encode(), partitions), rec.get("project") or None)
            groups.setdefault(where, []).append(rec)
        out: list[tuple[int, bytes, bytes]] = []
        oversize: list[Record] = []
        for where, records in groups.items():
            parts: list[tuple[list[Record], bytes]] = []
            self._fit(records, where[1], parts, oversize)
            for part, value in parts:
                out.append((where[0], part[0]["trace_id"].encode(), value))
        return out, oversize

    # -- sending ------------------------------------------------------------------------------------

    async def export(self, batch: list[Record]) -> int:
        """Send the batch; return once the broker acknowledged every message (see the module docstring),
        with the number of records dead-lettered as `too_large` (the delivery worker does not count them
        `exported`)."""
        if not batch:
            return 0
        from aiokafka.errors import (  # type: ignore[import-untyped]
            KafkaError,
            MessageSizeTooLargeError,
            RecordTooLargeError,
            TopicAuthorizationFailedError,
        )

        async with self._lock:
            try:
                producer = await self._ensure_producer()
                with anyio.fail_after(self.config.timeout):
                    partitions = await producer.partitions_for(self.config.topic)
                self._partitions = len(partitions)
                messages, oversize = self.messages(batch, len(partitions))
                await self._send(producer, messages)
            except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
                self._set_state("up", describe_error(exc))
                raise PermanentExportError(
                    f"the broker refused a message as too large ({type(exc).__name__}); lower max_message_bytes "
                    f"(now {self.config.max_message_bytes}) below the topic's max.message.bytes") from exc
            except TopicAuthorizationFailedError as exc:
                self._set_state("down: not authorized", type(exc).__name__)
                raise PermanentExportError(f"not authorized to write topic {self.config.topic}",
                                           status=403) from exc
            except KafkaError as exc:
                error = describe_error(exc)
                auth = "Authentication" in type(exc).__name__ or "Sasl" in type(exc).__name__
                self._set_state("down: authentication failed" if auth else "down", error)
                if auth:
                    await self._reset()
                    raise PermanentExportError(f"the brokers refused our credentials: {error}", status=401) from exc
                raise RetryableExportError(f"kafka brokers {self.config.describe()}: {error}") from exc
            except TimeoutError as exc:
                self._set_state("down", f"no answer within {self.config.timeout:g}s")
                raise RetryableExportError(f"kafka brokers {self.config.describe()}: no answer within "
                                           f"{self.config.timeout:g}s") from exc
            except OSError as exc:
                error = describe_error(exc)
                self._set_state("down", error)
                await self._reset()
                raise RetryableExportError(f"kafka brokers {self.config.describe()}: {error}") from exc
            self._set_state("up")
        if oversize:  # only now: a failed attempt is retried whole, or dead-lettered whole by delivery
            self._dead_letter(oversize)
        return len(oversize)

    async def _send(self, producer: Any, messages: list[tuple[int, bytes, bytes]]) -> None:
        pending = []
        for partition, key, value in messages:
            digest = hashlib.blake2b(value, digest_size=16, key=partition.to_bytes(4, "big")).digest()
            if digest in self._sent:
                continue  # acknowledged in an earlier attempt of this batch
            pending.append((digest, partition, key, value))
        if not pending:
            return
        failures: list[BaseException] = []
        with anyio.fail_after(self.config.timeout + 1):
            futures = []
            for digest, partition, key, value in pending:
                futures.append((digest, await producer.send(self.config.topic, value, key=key, partition=partition)))
            for digest, future in futures:
                try:
                    await future
                except Exception as exc:  # each message's fate is its own
                    failures.append(exc)
                    continue
                self._sent[digest] = None
                if len(self._sent) > _MEMO:
                    self._sent.popitem(last=False)
        self.counters.add("kafka_messages", len(pending) - len(failures))
        if failures:
            raise failures[0]

    def _dead_letter(self, records: list[Record]) -> None:
        limit = self.config.max_message_bytes
        for rec in records:
            self.deadletters.write([rec], "too_large", status=None,
                                   error=f"one record encodes to more than max_message_bytes ({limit})")
        self.counters.drop("too_large", len(records))
        self.counters.add("dead_lettered", len(records))
        log.error("Exporter %s: %d records are each larger than max_message_bytes (%d) and cannot be sent to "
                  "Kafka; dead-lettered them to %s.", self.ctx.name, len(records), limit, self.deadletters.path)

    async def aclose(self) -> None:
        """Flush and stop the producer. Idempotent."""
        wire.leave(self)
        await self._reset()


def _trace_boundary(records: list[Record]) -> int:
    """Where to cut `records` (sorted by trace) in two: the trace boundary nearest the middle, else the middle."""
    middle = len(records) // 2
    best = None
    for i in range(1, len(records)):
        if records[i]["trace_id"] != records[i - 1]["trace_id"] and (best is None or abs(i - middle) < abs(best - middle)):
            best = i
    return best if best is not None else max(1, middle)
