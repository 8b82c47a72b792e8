"""What every OTLP receiver (otlp_http, otlp_grpc) does with one decoded ExportTraceServiceRequest.

1. `decode_spans`: each span through `shipper.otlp.decode` into a record v1, checked by
   `shipper.record.validate`; a span that is not a valid record becomes a `Reject` (its JSON excerpt).
2. `Handover.take`: the records go to the pipeline as one `Intake` whose mark is a fresh `Receipt`; the
   pipeline calls the receiver's `commit(mark)` once they are in every exporter's queue, and only then
   does `take` return the answer, so an OK answer means durable. If intake does not take the request
   within `HANDOVER_WAIT` (intake full) or the commit does not come within the receiver's timeout,
   `take` raises `Busy` and the receiver answers "unavailable, retry later" (HTTP 503 + Retry-After,
   gRPC UNAVAILABLE + RetryInfo): the sending SDK retries instead of the daemon dropping. A request that
   timed out after the handover may arrive twice (at least once, never lost).
3. `export_response`: the OTLP answer, with `partial_success` naming the rejected spans.
"""

from __future__ import annotations

from typing import Any

import anyio
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shipper.component import Deliver, Intake
from shipper.errors import RecordError
from shipper.otlp.decode import from_request, to_record
from shipper.record import Reject, validate
from shipper.stats import Counters

__all__ = ["HANDOVER_WAIT", "RETRY_AFTER", "Busy", "Handover", "Receipt", "decode_spans", "export_response",
           "grpc_endpoints"]

HANDOVER_WAIT = 1.0
"""Seconds a request may wait for room in the daemon's intake before it is answered "unavailable"."""
RETRY_AFTER = 1
"""Seconds the "unavailable" answer asks the sender to wait before it retries."""

grpc_endpoints: list[str] = []
"""`host:port` of each otlp_grpc receiver bound in this process, for otlp_http's answer to a gRPC client."""


class Busy(Exception):
    """The request was not made durable in time; the sender should retry after `RETRY_AFTER` seconds."""


class Receipt:
    """The mark of one request's intake: set when the pipeline commits it."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = anyio.Event()


def decode_spans(message: ExportTraceServiceRequest, max_record_bytes: int) -> tuple[list[dict[str, Any]],
                                                                                     list[Reject]]:
    """The request's spans as valid records, and a `Reject` for each span that is not one."""
    records: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for otel, pb in from_request(message):
        try:
            records.append(validate(to_record(otel)))
        except RecordError as exc:
            rejects.append(Reject(exc.reason, exc.detail, _excerpt(pb, max_record_bytes)))
    return records, rejects


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
                   deliver: Deliver) -> None:
        """Return once the records are in every exporter's queue; raise `Busy` when that does not happen."""
        self.counters.add("requests")
        if not records and not rejects:
            return
        if records:
            self.counters.add("received", len(records))
        receipt = Receipt()
        with anyio.move_on_after(min(HANDOVER_WAIT, self.timeout)) as waiting:
            try:
                await deliver(Intake(records, rejects, receipt, source, size))
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


def _excerpt(pb: Any, limit: int) -> bytes:
    """The rejected span as it came (JSON text), capped, for the rejected-records log."""
    try:
        text = json_format.MessageToJson(pb, indent=None).encode()
    except Exception:
        text = b""
    return text[: min(limit, 65536)]
