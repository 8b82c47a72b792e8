"""What every HTTP exporter shares: one pooled httpx.AsyncClient, gzip, a request-size cap, error classes.

`HTTPExporter` is the base of the OTLP/HTTP exporters (otlp_http, phoenix, langfuse, braintrust).
A subclass says where to send (`url`), how to authenticate and route a project (`headers(project)`),
and which attributes to emit (`encoder`); the base does the rest, per batch:

1. copy trace-wide fields across the spans of each trace, group the spans by `project`; every project
   is tried even when one fails (a retryable failure is raised before a permanent one, so the batch is
   retried and, thanks to 3., only the failed projects are sent again);
2. encode one request per project; if it is larger than `max_request_bytes` (before compression), split
   the spans in halves until each part fits (a single span is sent whatever its size); a 413 answer
   splits the same way;
3. gzip, and skip parts this exporter already delivered (by a digest of the compressed body, a fraction
   of the bytes to hash; a retried batch re-sends only what failed; the memory holds the last `_MEMO`
   parts and is lost at a restart, so delivery stays at-least-once);
4. POST over the pooled client (connections reused; `timeout` bounds connecting, each read, each
   write and the wait for a pooled connection, as httpx does), classify the answer:
   2xx is success (an OTLP partial success is logged and its rejected spans counted as
   `rejected_by_backend`); connection errors, timeouts and `shipper.errors.RETRYABLE_STATUSES` raise
   `RetryableExportError` with `Retry-After` parsed (seconds or an HTTP date); `AUTH_STATUSES` (401,
   403) raise `AuthExportError`; other answers raise `PermanentExportError` with a short, secrets-free
   excerpt of the body. Exporters never retry.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import hashlib
import logging
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import anyio
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.component import Context
from shipper.errors import (
    AUTH_STATUSES,
    RETRYABLE_STATUSES,
    AuthExportError,
    ExportError,
    PermanentExportError,
    RetryableExportError,
)
from shipper.otlp import forward, wire
from shipper.otlp.encode import Encoder, group_by_project, partial_success
from shipper.record import MAX_RECORD_BYTES, Record
from shipper.settings import ExporterCommon
from shipper.values import ByteSize
from shipper.version import VERSION

__all__ = ["HTTPCommon", "HTTPExporter", "classify", "excerpt", "parse_retry_after"]

log = logging.getLogger("shipper.exporters.http")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
USER_AGENT = f"shipper/{VERSION}"
EXCERPT_CHARS = 300
_MEMO = 4096
_GZIP_IN_THREAD = 1024 * 1024
"""Bodies larger than this are gzipped in a worker thread; smaller ones in the event loop (level 1: about
1.7 ms for 1 MiB of OTLP), since handing one to a thread and back cost more CPU than it saved: 7.1 to 8.1
against 8.4 to 9.1 µs per span forwarding 512-span requests of 382 KB (docs/forwarding.md)."""
_SECRET_PATTERNS = re.compile(
    r"(?i)(bearer\s+|basic\s+)[A-Za-z0-9._~+/=-]+|\b(sk|pk)-(lf|bt|proj)?-?[A-Za-z0-9_-]{8,}")


def _gzip(body: bytes) -> bytes:
    """gzip at level 1: on OTLP protobuf it is 2.5x faster than the default 9 for 2% more bytes. No
    timestamp in the header (mtime 0), so the same body always gives the same bytes (and digest)."""
    return gzip.compress(body, compresslevel=1, mtime=0)


@dataclass(kw_only=True)
class HTTPCommon(ExporterCommon):
    """Keys every HTTP exporter takes besides ExporterCommon's."""

    compression: Literal["gzip", "none"] = "gzip"
    max_request_bytes: ByteSize = field(default=4 * 1024 * 1024, metadata={"min": 1024})

    default_batch_spans: ClassVar[int] = 2048
    """`batch.max_spans` unless set (others' default is 512): each request costs the daemon a fixed share
    of CPU (HTTP, gzip set-up, the queue's acknowledgement), so larger batches send the same spans for
    less. `python -m benchmarks.batch_size` (alternating rounds, default processors): socket -> otlp_http
    26.2k spans per CPU-second with 2048 against 24.2k with 512; the file exporter the other way, 52.4k
    against 56.5k, so it keeps 512. A batch of 2048 LLM spans is about 1.6 MB of NDJSON, inside
    `max_bytes` and `max_request_bytes`."""

    def check_url(self, key: str, value: str) -> list[str]:
        """`key: problem` when `value` is not an http(s) URL."""
        if not value.startswith(("http://", "https://")):
            return [f"{key}: expected an http:// or https:// URL, got {value!r}"]
        return []


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None if unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def excerpt(body: bytes, secrets: Iterable[str] = ()) -> str:
    """The start of an answer's body as one line of text, with credentials scrubbed."""
    text = body[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _SECRET_PATTERNS.sub(lambda m: (m.group(1) or "") + "***", text)
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def classify(response: httpx.Response, where: str, secrets: Iterable[str] = (),
             credentials: str = "the credentials") -> ExportError | None:
    """None for a 2xx answer, else the error to raise (docs/transports.md, Delivery guarantees): `RetryableExportError` for
    `RETRYABLE_STATUSES`, `AuthExportError` for `AUTH_STATUSES`, else `PermanentExportError`."""
    code = response.status_code
    if 200 <= code < 300:
        return None
    text = excerpt(response.content, secrets)
    said = f": {text}" if text else ""
    if code in RETRYABLE_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        wait = f"; it asked to wait {retry_after:.0f} s" if retry_after is not None else ""
        return RetryableExportError(f"{where} answered HTTP {code}{wait}{said}; the batch will be retried",
                                    status=code, excerpt=text, retry_after=retry_after)
    if code in AUTH_STATUSES:
        return AuthExportError(
            f"{where} refused {credentials} with HTTP {code}{said}. The credentials are wrong, revoked or "
            "lack permission (or the account's ingestion is suspended); an operator must fix the "
            "exporter's configuration; the batch stays queued and is retried every retry.max_interval",
            status=code, excerpt=text, retry_after=None)
    return PermanentExportError(f"{where} rejected the batch with HTTP {code}{said}; it will not be retried",
                                status=code, excerpt=text)


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One default TLS context for every client: building one (loading CA certificates) is slow."""
    return httpx.create_ssl_context()


class _TooLarge(Exception):
    """A 413 answer for a part of more than one span: split it."""


class HTTPExporter:
    """Base of the OTLP/HTTP exporters; subclasses set `url`, `encoder`, `headers()` and maybe more."""

    content_type = PROTOBUF
    shared_protobuf = True
    """Protobuf bodies are `encode(request)` = `SerializeToString`, so `body` may write them with
    `shipper.otlp.wire`; a subclass whose `encode` changes protobuf bodies sets this False."""
    credentials = "the credentials"
    """What the credentials are called in a 401/403 message, e.g. `api_key`."""
    forwards_otlp = False
    """True when OTLP requests received are sent on as they came (otlp_http's `forward_otlp`): then the
    pipeline may queue them unread, and `export_forwarded` sends them (docs/forwarding.md)."""

    def __init__(self, config: HTTPCommon, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.url = ""
        self.default_project: str | None = None
        self.encoder = Encoder(())
        self._client: httpx.AsyncClient | None = None
        self._delivered: OrderedDict[bytes, None] = OrderedDict()
        self._refused = 0  # spans refused in partial successes during the current export()
        self._stats: dict[str, Any] = {"requests": 0, "bytes_sent": 0, "spans_sent": 0, "splits": 0,
                                       "skipped_redelivery": 0, "rejected_by_backend": 0, "last_status": None}

    # What subclasses provide.
    def headers(self, project: str | None) -> dict[str, str]:
        """Request headers (auth, routing) for spans of `project`."""
        return {}

    def secrets(self) -> list[str]:
        """Secret values that must never show in an excerpt or log."""
        return []

    def encode(self, message: ExportTraceServiceRequest) -> bytes:
        """The request body."""
        return message.SerializeToString()

    # The shared machinery.
    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status` (with the process's shared span parts: hits and misses)."""
        out = {"url": self.url, **self._stats}
        if wire.shared():
            out["shared_span_parts"] = {"hits": wire.PARTS.hits, "misses": wire.PARTS.misses}
        return out

    async def open(self) -> None:
        """Create the pooled HTTP client."""
        if self.content_type == PROTOBUF and self.shared_protobuf:
            wire.join(self)
        if self._client is None:
            timeout = self.config.timeout
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=30.0),
                headers={"user-agent": USER_AGENT},
                follow_redirects=False,
                verify=_tls_context(),
            )

    async def aclose(self) -> None:
        """Close the client and its connections. Idempotent."""
        wire.leave(self)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def export(self, batch: list[Record]) -> int | None:
        """Send `batch`, one request (or more, when split) per project; raise an ExportError to say why not.

        Returns how many spans the backend refused in an OTLP partial success: they are counted
        `rejected_by_backend`, so the delivery worker does not count them `exported` too."""
        if not batch:
            return None
        return await self._export([], batch)

    async def export_forwarded(self, requests: list[tuple[bytes, int]], records: list[Record]) -> int | None:
        """`export`, for a batch holding OTLP requests kept as they came (each `(body, spans)`, only when
        `forwards_otlp`) besides `records`: the requests are joined into as few bodies as
        `max_request_bytes` allows and sent as they are (shipper.otlp.forward)."""
        return await self._export(requests, records)

    async def _export(self, requests: list[tuple[bytes, int]], records: list[Record]) -> int | None:
        if self._client is None:
            await self.open()
        self._refused = 0
        sends: list[Callable[[], Awaitable[None]]] = []
        if requests:
            sends.append(functools.partial(self._send_requests, requests))
        if records:
            for project, spans in group_by_project(wire.trace_wide(records), self.default_project).items():
                sends.append(functools.partial(self._send, project, spans))
        retryable: ExportError | None = None
        permanent: ExportError | None = None
        for send in sends:
            try:
                await send()
            except RetryableExportError as exc:
                retryable = retryable or exc
            except PermanentExportError as exc:
                permanent = permanent or exc
        if retryable is not None:
            raise retryable
        if permanent is not None:
            raise permanent
        return self._refused or None

    def body(self, spans: list[Record], project: str | None) -> bytes:
        """The request body. Protobuf is written by `shipper.otlp.wire` (a third cheaper than building
        messages), from per-span parts every open exporter shares (a span sent to three backends is
        encoded about once); other encodings go through `encode`."""
        if self.content_type == PROTOBUF and self.shared_protobuf:
            return wire.request_bytes(self.encoder, spans, project, wire.PARTS if wire.shared() else None)
        return self.encode(self.encoder.request(spans, project))

    async def _send(self, project: str | None, spans: list[Record]) -> None:
        body = self.body(spans, project)
        if (len(body) > self.config.max_request_bytes and len(spans) > 1) or not await self._ship(
                body, self.headers(project), len(spans)):
            self._stats["splits"] += 1
            half = len(spans) // 2
            await self._send(project, spans[:half])
            await self._send(project, spans[half:])

    async def _send_requests(self, requests: list[tuple[bytes, int]]) -> None:
        body = requests[0][0] if len(requests) == 1 else b"".join(request for request, _ in requests)
        spans = sum(count for _, count in requests)
        if (len(body) <= self.config.max_request_bytes or len(requests) == 1) and await self._ship(
                body, self.headers(None), spans):
            return
        self._stats["splits"] += 1
        if len(requests) > 1:
            half = len(requests) // 2
            await self._send_requests(requests[:half])
            await self._send_requests(requests[half:])
            return
        records, _ = forward.decode(body, MAX_RECORD_BYTES)  # one request too large: split as its records
        if records:
            await self._send(None, records)

    async def _ship(self, body: bytes, headers: dict[str, str], n_spans: int) -> bool:
        """gzip (under `compression: gzip`), skip what was already delivered, POST; False on a 413 for a
        body of more than one span (the caller splits it)."""
        data = body
        if self.config.compression == "gzip":  # before the digest: a fifth of the bytes to hash
            data = (await anyio.to_thread.run_sync(_gzip, body) if len(body) > _GZIP_IN_THREAD else _gzip(body))
        digest = hashlib.blake2b(self.url.encode() + repr(sorted(headers.items())).encode()
                                 + self.config.compression.encode() + b"\0" + data, digest_size=16).digest()
        if digest in self._delivered:
            self._stats["skipped_redelivery"] += n_spans
            return True
        try:
            await self._post(data, headers, n_spans)
        except _TooLarge:
            return False
        self._delivered[digest] = None
        if len(self._delivered) > _MEMO:
            self._delivered.popitem(last=False)
        return True

    async def _post(self, data: bytes, headers: dict[str, str], n_spans: int) -> None:
        """POST `data` (the body, gzipped under `compression: gzip`) and classify the answer."""
        assert self._client is not None
        headers = {**headers, "content-type": self.content_type}
        if self.config.compression == "gzip":
            headers["content-encoding"] = "gzip"
        where = f"Exporter {self.ctx.name}: {self.url}"
        try:
            response = await self._client.post(self.url, content=data, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetryableExportError(f"{where} gave no answer within {self.config.timeout:g} s "
                                       f"({type(exc).__name__}); the batch will be retried") from exc
        except httpx.TransportError as exc:
            raise RetryableExportError(f"{where} could not be reached ({type(exc).__name__}: "
                                       f"{excerpt(str(exc).encode(), self.secrets()) or 'no detail'}); "
                                       "the batch will be retried") from exc
        self._stats["requests"] += 1
        self._stats["last_status"] = response.status_code
        if response.status_code == 413 and n_spans > 1:
            raise _TooLarge()
        error = classify(response, where, self.secrets(), self.credentials)
        if error is not None:
            raise error
        self._stats["bytes_sent"] += len(data)
        self._stats["spans_sent"] += n_spans
        rejected, message = partial_success(response.content, response.headers.get("content-type", ""))
        if rejected > 0:
            self._stats["rejected_by_backend"] += rejected
            self._refused += rejected
            self.ctx.counters.drop("rejected_by_backend", rejected)
            log.warning("Exporter %s: %s accepted the request but rejected %d of its %d spans: %s. They are "
                        "counted as rejected_by_backend and not retried.", self.ctx.name, self.url,
                        rejected, n_spans, excerpt(message.encode(), self.secrets()) or "no reason given")

