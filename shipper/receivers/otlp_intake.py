"""What every OTLP receiver (otlp_http, otlp_grpc) does with one decoded ExportTraceServiceRequest.

1. `decode_body` (a protobuf body) / `decode_spans` (a decoded request): each span through
   `shipper.otlp.decode` into a record v1, checked by `shipper.record.validate`; a span that is not a
   valid record becomes a `Reject` (its JSON excerpt). `decode_body` reads the common request fast (see
   "The fast path" below) and any other one as `decode_spans` does: the records are the same either way.
2. `Handover.take`: the records go to the pipeline as one `Intake` whose mark is a fresh `Receipt`; the
   pipeline calls the receiver's `commit(mark)` once they are in every exporter's queue, and only then
   does `take` return the answer, so an OK answer means durable. If intake does not take the request
   within `HANDOVER_WAIT` (intake full) or the commit does not come within the receiver's timeout,
   `take` raises `Busy` and the receiver answers "unavailable, retry later" (HTTP 503 + Retry-After,
   gRPC UNAVAILABLE + RetryInfo): the sending SDK retries instead of the daemon dropping. A request that
   timed out after the handover may arrive twice (at least once, never lost).
3. `export_response`: the OTLP answer, with `partial_success` naming the rejected spans.

The fast path. Reading a span's attributes through protobuf's message objects costs more than the rest of
its decoding (a Python object per KeyValue and per AnyValue, a `WhichOneof` call each). `decode_body`
parses the body with a copy of the OTLP schema in which `Span.attributes` is `repeated bytes` (the same
wire format: each KeyValue's encoded bytes), so protobuf's C parser still reads and checks everything
else, and reads the KeyValues here: a short one (a model name, a span kind, a flag: the same bytes in span
after span) once per `_CACHE_MAX` distinct ones, from a bounded cache. All the spans of one ResourceSpans
share one `ResourceFields`. Anything this reader does not take as it is (a kvlist value, an array in an
array, fields out of their usual order or repeated, an integer over 9 bytes but a negative one, text that
is not UTF-8, a span that is not a valid record, ...) sends the whole request the general way (the
standard schema, `from_request`, `to_record`): same records, same rejects, same errors.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from shipper.component import Context, Deliver, Intake
from shipper.errors import RecordError
from shipper.otlp import forward
from shipper.otlp.decode import (
    OTEL_KINDS,
    STATUS_CODES,
    ResourceFields,
    build_record,
    check_groups,
    clean_attributes,
    decode_spans,
    key_values,
)
from shipper.record import MAX_KEY_CHARS, Record, Reject, validate
from shipper.stats import Counters

__all__ = ["HANDOVER_WAIT", "RETRY_AFTER", "THREAD_BODY_BYTES", "Busy", "Handover", "Receipt", "decode_body",
           "decode_spans", "export_response", "grpc_endpoints", "off_loop", "read_body", "read_body_off_loop"]

log = logging.getLogger("shipper.receivers.otlp_intake")

HANDOVER_WAIT = 1.0
"""Seconds a request may wait for room in the daemon's intake before it is answered "unavailable"."""
RETRY_AFTER = 1
"""Seconds the "unavailable" answer asks the sender to wait before it retries."""

THREAD_BODY_BYTES = 512 * 1024
"""Request bodies larger than this are read in a worker thread (`off_loop`), so one big request cannot
hold the event loop. Smaller ones are read in the loop, where handing them to a thread would cost more
than it spares; the worst of them, 10,000 tiny spans in 508 KiB, holds it 48 to 71 ms
(`python -m benchmarks.loop_stall --spans 10000`; 15 MiB of them held it 1.5 to 4 s before this)."""
_READERS = 2
"""Big requests read at once; more wait their turn (each holds its body and its records meanwhile)."""
_limiter: anyio.CapacityLimiter | None = None
T = TypeVar("T")

grpc_endpoints: list[str] = []
"""`host:port` of each otlp_grpc receiver bound in this process, for otlp_http's answer to a gRPC client."""


class Busy(Exception):
    """The request was not made durable in time; the sender should retry after `RETRY_AFTER` seconds."""


class Receipt:
    """The mark of one request's intake: set when the pipeline commits it."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = anyio.Event()


def decode_body(body: bytes, max_record_bytes: int) -> tuple[list[Record], list[Reject]]:
    """`decode_spans` of the ExportTraceServiceRequest `body` encodes, fast when it can be (see the module doc).

    Raises protobuf's `DecodeError` (the standard parser's) when `body` is not a readable request, and
    nothing else that `decode_spans` would not raise.
    """
    if _FAST_REQUEST is not None:
        try:
            message = _FAST_REQUEST.FromString(body)
        except DecodeError:
            pass  # the standard parser below says why (or, never seen, reads it)
        else:
            check_groups(message)
            try:
                return _fast_records(message), []
            except (_Unusual, RecordError, UnicodeDecodeError, IndexError, struct.error):
                pass
    message = ExportTraceServiceRequest.FromString(body)
    check_groups(message)
    return decode_spans(message, max_record_bytes)


def read_body(body: bytes, ctx: Context) -> tuple[list[Record], list[Reject], int]:
    """(records, rejects, 0): `decode_body` of `body`; or ([], [], its span count) when the pipeline
    forwards OTLP (`ctx.forwarding`) and `shipper.otlp.forward.check` passes: then the request is handed
    over as it came (`Intake.otlp`), and nothing is decoded. Raises as `decode_body` does."""
    limits = ctx.forwarding() if ctx.forwarding is not None else None
    if limits is not None and len(body) <= limits[1]:
        count = forward.check(body, limits[0])
        if count:
            return [], [], count
    records, rejects = decode_body(body, ctx.max_record_bytes)
    return records, rejects, 0


async def read_body_off_loop(body: bytes, ctx: Context, counters: Counters) -> tuple[list[Record], list[Reject], int]:
    """`read_body`, in a worker thread when `body` is over `THREAD_BODY_BYTES` (`off_loop`)."""
    return await off_loop(len(body), counters, read_body, body, ctx)


async def off_loop(size: int, counters: Counters, read: Callable[..., T], *args: Any) -> T:
    """`read(*args)`, in a worker thread when the body it reads is over `THREAD_BODY_BYTES` (counted
    `read_in_thread`). The thread still takes turns for the GIL with the event loop, which so goes on
    serving other senders, the control socket and the exporters."""
    if size <= THREAD_BODY_BYTES:
        return read(*args)
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(_READERS)
    counters.add("read_in_thread")
    return await anyio.to_thread.run_sync(read, *args, limiter=_limiter)


def export_response(rejects: list[Reject]) -> ExportTraceServiceResponse:
    """The OTLP answer: empty when every span was taken, else `partial_success` with the count and the first."""
    response = ExportTraceServiceResponse()
    if rejects:
        first = rejects[0]
        response.partial_success.rejected_spans = len(rejects)
        response.partial_success.error_message = (
            f"{len(rejects)} spans were not valid records (first: {first.reason}, {first.detail})")
    return response


class Handover:
    """Hands one request's records to the pipeline and waits until they are durable (see the module doc)."""

    def __init__(self, counters: Counters, timeout: float) -> None:
        self.counters = counters
        self.timeout = timeout

    async def take(self, records: list[dict[str, Any]], rejects: list[Reject], source: str, size: int,
                   deliver: Deliver, otlp: bytes = b"", otlp_spans: int = 0) -> None:
        """Return once the records (or the forwarded request `otlp` of `otlp_spans` spans) are in every
        exporter's queue; raise `Busy` when that does not happen."""
        self.counters.add("requests")
        if not records and not rejects and not otlp_spans:
            return
        if records or otlp_spans:
            self.counters.add("received", len(records) + otlp_spans)
        receipt = Receipt()
        with anyio.move_on_after(min(HANDOVER_WAIT, self.timeout)) as waiting:
            try:
                await deliver(Intake(records, rejects, receipt, source, size, otlp if otlp_spans else b"",
                                     otlp_spans))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # the daemon is stopping
                self.counters.add("unavailable")
                raise Busy("shipper is stopping; retry") from None
        if waiting.cancelled_caught:
            self.counters.add("intake_full")
            raise Busy("shipper's intake is full; retry")
        with anyio.move_on_after(self.timeout) as committing:
            await receipt.done.wait()
        if committing.cancelled_caught:
            self.counters.add("unavailable")
            raise Busy(f"the records were not in the exporters' queues within {self.timeout:g}s; retry")

    @staticmethod
    def commit(mark: Any) -> None:
        """The pipeline's commit: the records of `mark` are durable; wake the request waiting on them."""
        if isinstance(mark, Receipt):
            mark.done.set()


# -- the fast path (see the module doc) -------------------------------------------------------------------


class _Unusual(Exception):
    """Something the fast path does not read itself: the request goes the general way."""


def _fast_request_class() -> Any:
    """ExportTraceServiceRequest with `Span.attributes` as `repeated bytes`, in a descriptor pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if proto.name == trace_pb2.DESCRIPTOR.name:
            span = next(m for m in proto.message_type if m.name == "Span")
            attributes = next(f for f in span.field if f.number == 9)
            if attributes.name != "attributes" or attributes.type_name != ".opentelemetry.proto.common.v1.KeyValue":
                raise ValueError(f"unexpected Span field 9: {attributes.name} {attributes.type_name}")
            attributes.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            attributes.ClearField("type_name")
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(ExportTraceServiceRequest.DESCRIPTOR.full_name))


try:
    _FAST_REQUEST: Any = _fast_request_class()
except Exception as exc:  # an opentelemetry-proto / protobuf this was not made for: the general way only
    log.debug("OTLP fast path off: %s", exc)
    _FAST_REQUEST = None

_CACHE_MAX = 4096
"""KeyValues kept read (each of at most `_CACHE_BYTES` bytes): about 2 MB at most, then the cache starts anew."""
_CACHE_BYTES = 128
_cache: dict[bytes, tuple[str, Any]] = {}
"""Encoded KeyValue → (key, value), for those `clean_attributes` keeps as they are (scalars)."""
_OTEL_KIND = dict(enumerate(OTEL_KINDS))
_STATUS = dict(enumerate(STATUS_CODES))
_double = struct.Struct("<d").unpack_from


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """The varint at b[i] (at most 9 bytes: under 2**63) and the index after it."""
    value = shift = 0
    for j in range(i, min(i + 9, len(b))):
        byte = b[j]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, j + 1
        shift += 7
    raise _Unusual


def _any_value(b: bytes, i: int, end: int, top: bool) -> Any:
    """The OTLP AnyValue encoded in b[i:end] as `decode.any_value` gives it: a scalar, or (`top`) an array
    of scalars."""
    if i == end:
        return None
    tag = b[i]
    if tag in (0x0A, 0x3A) or (tag == 0x2A and top):  # string, bytes, array: length-delimited
        size, j = _varint(b, i + 1)
        if j + size != end:
            raise _Unusual
        if tag == 0x0A:
            return b[j:end].decode()
        if tag == 0x3A:
            return b[j:end]
        values = []
        while j < end:
            if b[j] != 0x0A:
                raise _Unusual
            size, j = _varint(b, j + 1)
            if j + size > end:
                raise _Unusual
            values.append(_any_value(b, j, j + size, False))
            j += size
        return values
    if tag == 0x18:  # int64
        if end - i == 11 and b[end - 1] == 1:  # a negative one: ten bytes, the last holding bit 63
            low = 0
            for k in range(9):
                byte = b[i + 1 + k]
                if byte < 0x80:
                    raise _Unusual
                low |= (byte & 0x7F) << (7 * k)
            return low - (1 << 63)
        value, j = _varint(b, i + 1)
        if j != end:
            raise _Unusual
        return value
    if tag == 0x21 and end - i == 9:  # double
        return _double(b, i + 1)[0]
    if tag == 0x10 and end - i == 2 and b[i + 1] < 2:  # bool
        return b[i + 1] == 1
    raise _Unusual


def _key_value(b: bytes) -> tuple[str, Any, bool]:
    """An encoded KeyValue as (key, value, whether `clean_attributes` keeps the pair as it is)."""
    # The usual shape, inline: a key under 128 bytes (so under 256 characters), then the value: a string
    # (length in one or two bytes), a small non-negative int or a double. Any other: _key_value_any.
    n = len(b)
    if n > 4 and b[0] == 0x0A and b[1] < 0x80:
        i = 2 + b[1]  # after the key
        if i + 3 < n and b[i] == 0x12:
            size, j = b[i + 1], i + 2  # the AnyValue: b[j:j + size]
            if size >= 0x80:
                size, j = ((size & 0x7F) | (b[j] << 7), j + 1) if b[j] < 0x80 else (-1, j)
            if j + size == n and n - j >= 2:
                tag = b[j]
                if tag == 0x0A:  # string
                    size, k = b[j + 1], j + 2
                    if size >= 0x80:
                        size, k = ((size & 0x7F) | (b[k] << 7), k + 1) if k < n and b[k] < 0x80 else (-1, k)
                    if k + size == n:
                        return b[2:i].decode(), b[k:].decode(), True
                elif tag == 0x18:  # int, a varint of one or two bytes
                    if n - j == 2 and b[j + 1] < 0x80:
                        return b[2:i].decode(), b[j + 1], True
                    if n - j == 3 and b[j + 1] >= 0x80 and b[j + 2] < 0x80:
                        return b[2:i].decode(), (b[j + 1] & 0x7F) | (b[j + 2] << 7), True
                elif tag == 0x21 and n - j == 9:  # double
                    value = _double(b, j + 1)[0]
                    return b[2:i].decode(), value, value - value == 0.0  # kept when finite
    return _key_value_any(b)


def _key_value_any(b: bytes) -> tuple[str, Any, bool]:
    """`_key_value` of any KeyValue the fast path reads (fields in order, each once)."""
    n = len(b)
    key, i = "", 0
    value: Any = None
    if i < n and b[i] == 0x0A:
        size, i = _varint(b, 1)
        if i + size > n:
            raise _Unusual
        key = b[i:i + size].decode()
        i += size
    if i < n and b[i] == 0x12:
        size, i = _varint(b, i + 1)
        if i + size != n:
            raise _Unusual
        value = _any_value(b, i, n, True)
        i = n
    if i != n:  # another field, or these out of order or repeated
        raise _Unusual
    kind = type(value)
    kept = (kind is str or kind is int or kind is bool or (kind is float and math.isfinite(value))) and len(
        key) <= MAX_KEY_CHARS
    return key, value, kept


def _fast_records(message: Any) -> list[Record]:
    """The records of a request parsed with `_FAST_REQUEST`; raises when a span is not a valid record or
    holds something `_key_value` does not read."""
    records: list[Record] = []
    cache, cache_get = _cache, _cache.get
    otel_kind, status_of = _OTEL_KIND.get, _STATUS.get
    for resource_spans in message.resource_spans:
        resource = ResourceFields(key_values(resource_spans.resource.attributes), shared=True)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name, scope_version = scope.name, scope.version
            for pb in scope_spans.spans:
                encoded = pb.attributes
                pairs: list[Any] = list(map(cache_get, encoded))  # (key, value) of each KeyValue seen before, else None
                kept = True
                i = -1
                for _ in range(pairs.count(None)):
                    i = pairs.index(None, i + 1)
                    b = encoded[i]
                    key, value, same = _key_value(b)
                    pairs[i] = pair = (key, value)
                    if not same:
                        kept = False
                    elif len(b) <= _CACHE_BYTES:  # kept as it is: a scalar, so the pair can be shared
                        if len(cache) >= _CACHE_MAX:
                            cache.clear()
                        cache[b] = pair
                raw: dict[str, Any] = dict(pairs)
                status = pb.status
                events = pb.events
                links = pb.links
                record = build_record(
                    pb.trace_id.hex(), pb.span_id.hex(), pb.parent_span_id.hex() or None, pb.name,
                    pb.start_time_unix_nano, pb.end_time_unix_nano, otel_kind(pb.kind, "internal"),
                    status_of(status.code, "unset"), status.message, raw,
                    raw if kept else clean_attributes(raw),
                    [(e.name, e.time_unix_nano, key_values(e.attributes)) for e in events] if events else (),
                    [(lk.trace_id.hex(), lk.span_id.hex(), key_values(lk.attributes)) for lk in links] if links else (),
                    resource, scope_name, scope_version)
                records.append(validate(record))
    return records
