"""One contract for every exporter, then the HTTP exporters' own: against real backends, answers classified right.

The first part is transport-agnostic: each exporter kind has a `Backend` (a real scripted OTLP/HTTP
server, a real file) that says how to point the exporter at it, what it received, and how to make it
unreachable. A new exporter (Kafka, gRPC) gets the contract by adding its `Backend` to `BACKENDS`. The
second part holds what only HTTP has: status codes, Retry-After, gzip, connection reuse, request splits.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import EXAMPLES

from shipper.errors import PermanentExportError, RetryableExportError
from shipper.exporters.http import excerpt, parse_retry_after
from shipper.testing import OTLPServer, Reply, build_exporter, read_ndjson, short_dir

SECRET = "sk-very-secret-0123456789"
TYPES = ["otlp_http", "phoenix", "langfuse", "braintrust"]
PATHS = {"otlp_http": "/v1/traces", "phoenix": "/v1/traces", "langfuse": "/api/public/otel/v1/traces",
         "braintrust": "/otel/v1/traces"}
TRACE = [orjson.loads(line) for line in (EXAMPLES / "valid-trace.ndjson").read_bytes().splitlines() if line]


def settings(kind: str, url: str) -> dict[str, Any]:
    """The smallest config of `kind` that points at `url`, with a secret to keep out of messages."""
    return {
        "otlp_http": {"endpoint": url, "headers": {"Authorization": f"Bearer {SECRET}"}},
        "phoenix": {"endpoint": url, "api_key": SECRET},
        "langfuse": {"host": url, "public_key": "pk-lf-public", "secret_key": SECRET},
        "braintrust": {"api_url": url, "api_key": SECRET},
    }[kind]


def make(kind: str, url: str, **overrides: Any) -> Any:
    """Build HTTP exporter `kind` through the config machinery, as the daemon does."""
    exporter, _, _ = build_exporter(kind, {**settings(kind, url), **overrides})
    return exporter


# -- the contract every exporter keeps ------------------------------------------------------------------


class HTTPBackend:
    """A real OTLP/HTTP server for one HTTP exporter kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.server = OTLPServer().start()

    def settings(self) -> dict[str, Any]:
        return {**settings(self.kind, self.server.url), "timeout": 0.5}

    def unreachable(self) -> dict[str, Any]:
        with OTLPServer() as gone:
            url = gone.url
        return {**settings(self.kind, url), "timeout": 0.5}

    def received(self) -> list[str]:
        return [s["span_id"] for s in self.server.spans()]

    def close(self) -> None:
        self.server.stop()


class FileBackend:
    """A real NDJSON file for the `file` exporter; `/dev/full` (every write fails: ENOSPC) is unreachable."""

    def __init__(self) -> None:
        self.path = Path(short_dir("shf")) / "spans.ndjson"

    def settings(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def unreachable(self) -> dict[str, Any]:
        return {"path": "/dev/full"}

    def received(self) -> list[str]:
        return [r["span_id"] for r in read_ndjson(self.path)]

    def close(self) -> None:
        pass


BACKENDS = {**{kind: (lambda kind=kind: HTTPBackend(kind)) for kind in TYPES}, "file": FileBackend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    made = BACKENDS[request.param]()
    made.kind = request.param
    yield made
    made.close()


async def test_contract_ok_delivers_every_span_once(backend: Any):
    """An export that returns has put every span of the batch in the backend, once; a second batch too."""
    exp, _, _ = build_exporter(backend.kind, backend.settings())
    await exp.open()
    try:
        await exp.export(TRACE)
        await exp.export(TRACE[:2])
    finally:
        await exp.aclose()
    ids = [r["span_id"] for r in TRACE]
    assert sorted(backend.received()) == sorted(ids + ids[:2])


async def test_contract_unreachable_backend_is_retryable_and_secret_free(backend: Any):
    """A backend that cannot take the batch raises RetryableExportError (never retried by the exporter),
    with no secret in its message."""
    exp, _, _ = build_exporter(backend.kind, backend.unreachable())
    await exp.open()
    try:
        with pytest.raises(RetryableExportError) as info:
            await exp.export(TRACE)
        assert_secret_free(info.value)
    finally:
        await exp.aclose()


async def test_contract_close_is_idempotent_and_safe_without_open(backend: Any):
    """aclose() twice, or without open(), does nothing wrong; an empty batch sends nothing."""
    exp, _, _ = build_exporter(backend.kind, backend.settings())
    await exp.aclose()
    await exp.open()
    await exp.export([])
    await exp.aclose()
    await exp.aclose()
    assert backend.received() == []


# -- what the HTTP exporters share ----------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[OTLPServer]:
    with OTLPServer() as srv:
        yield srv


@pytest.fixture(params=TYPES)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def exporter(kind: str, server: OTLPServer) -> Any:
    exp = make(kind, server.url, timeout=0.5)
    await exp.open()
    yield exp
    await exp.aclose()


def assert_secret_free(exc: BaseException) -> None:
    """No message or excerpt of an error shows the secret."""
    assert SECRET not in str(exc)
    assert SECRET not in getattr(exc, "excerpt", "")


async def test_ok_delivers_every_span_once_to_the_backend_path(exporter: Any, kind: str, server: OTLPServer):
    """A 200 returns normally; the backend got every span once, as gzipped protobuf, on its path."""
    await exporter.export(TRACE)
    (request,) = server.requests
    assert request.path == PATHS[kind]
    assert request.error == ""
    assert request.header("content-encoding") == "gzip"
    assert request.header("content-type") == "application/x-protobuf"
    assert sorted(s["span_id"] for s in request.spans) == sorted(r["span_id"] for r in TRACE)
    assert exporter.statistics()["spans_sent"] == len(TRACE)


async def test_503_is_retryable_and_the_exporter_does_not_retry_itself(exporter: Any, server: OTLPServer):
    """503 twice raises RetryableExportError each time (one request per call); then 200 goes through."""
    server.script(Reply.status(503, "busy"), Reply.status(503, "busy"))
    for _ in range(2):
        with pytest.raises(RetryableExportError) as info:
            await exporter.export(TRACE)
        assert info.value.status == 503
        assert info.value.excerpt == "busy"
    await exporter.export(TRACE)
    assert len(server.requests) == 3
    assert len(server.requests[-1].spans) == len(TRACE)


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses(exporter: Any, server: OTLPServer, code: int):
    """408, 429 and 5xx other than 501 are retryable."""
    server.script(Reply.status(code))
    with pytest.raises(RetryableExportError) as info:
        await exporter.export(TRACE)
    assert info.value.status == code


@pytest.mark.parametrize("code", [400, 404, 413, 415, 422, 501])
async def test_permanent_statuses(exporter: Any, server: OTLPServer, code: int):
    """Other 4xx and 501 are permanent (413 on a single span: nothing left to split)."""
    server.script(Reply.status(code, f"nope {code}"))
    with pytest.raises(PermanentExportError) as info:
        await exporter.export(TRACE[:1])
    assert info.value.status == code
    assert info.value.excerpt == f"nope {code}"


async def test_429_retry_after_seconds_is_passed_on(exporter: Any, server: OTLPServer):
    """429 with `Retry-After: 7` raises a retryable error asking for 7 seconds."""
    server.script(Reply.retry_after(7))
    with pytest.raises(RetryableExportError) as info:
        await exporter.export(TRACE)
    assert info.value.status == 429
    assert info.value.retry_after == 7


async def test_503_retry_after_http_date_is_passed_on(exporter: Any, server: OTLPServer):
    """503 with `Retry-After` as an HTTP date raises a retryable error asking for the time until then."""
    server.script(Reply.retry_after(email.utils.formatdate(time.time() + 120, usegmt=True), code=503))
    with pytest.raises(RetryableExportError) as info:
        await exporter.export(TRACE)
    assert info.value.retry_after is not None and 110 <= info.value.retry_after <= 121


async def test_400_is_permanent_with_a_secrets_free_excerpt(exporter: Any, server: OTLPServer):
    """400 raises PermanentExportError carrying the body's start, with any echoed credential scrubbed."""
    server.script(Reply.status(400, f'{{"error": "bad span", "key": "{SECRET}", "auth": "Bearer abcdefghijkl"}}'))
    with pytest.raises(PermanentExportError) as info:
        await exporter.export(TRACE)
    assert info.value.status == 400
    assert "bad span" in info.value.excerpt
    assert "abcdefghijkl" not in info.value.excerpt
    assert_secret_free(info.value)


@pytest.mark.parametrize("code", [401, 403])
async def test_401_403_say_the_credentials_are_wrong(exporter: Any, server: OTLPServer, code: int):
    """401/403 are AuthExportError (retryable, slowly) and say plainly that the credentials are wrong."""
    from shipper.errors import AuthExportError

    server.script(Reply.status(code, "invalid credentials"))
    with pytest.raises(AuthExportError) as info:
        await exporter.export(TRACE)
    message = str(info.value)
    assert info.value.status == code
    assert "credentials are wrong" in message and "operator must" in message
    assert_secret_free(info.value)


async def test_hang_past_the_timeout_is_retryable_and_prompt(exporter: Any, server: OTLPServer):
    """A backend that answers nothing raises a retryable error at `timeout` (0.5 s), not at its 30 s hang."""
    server.script(Reply.hang(30))
    with pytest.raises(RetryableExportError) as info:
        await exporter.export(TRACE)
    assert "no answer within 0.5 s" in str(info.value)


async def test_reset_connection_is_retryable(exporter: Any, server: OTLPServer):
    """A connection reset before any answer is retryable."""
    server.script(Reply.reset())
    with pytest.raises(RetryableExportError):
        await exporter.export(TRACE)
    await exporter.export(TRACE)  # and the next attempt, on a fresh connection, goes through
    assert len(server.requests[-1].spans) == len(TRACE)


async def test_connection_refused_says_the_backend_could_not_be_reached(kind: str):
    """Nobody listening is retryable, and says it could not reach the backend."""
    with OTLPServer() as gone:
        url = gone.url
    exp = make(kind, url, timeout=0.5)
    try:
        with pytest.raises(RetryableExportError) as info:
            await exp.export(TRACE)
        assert "could not be reached" in str(info.value)
        assert_secret_free(info.value)
    finally:
        await exp.aclose()


async def test_partial_success_is_counted_not_retried(exporter: Any, server: OTLPServer):
    """An OTLP partial success returns normally and counts the rejected spans as rejected_by_backend."""
    server.script(Reply.partial(2, "span too old"))
    assert await exporter.export(TRACE) == 2  # set aside: the delivery worker does not count them exported
    assert exporter.ctx.counters.dropped["rejected_by_backend"] == 2
    assert exporter.statistics()["rejected_by_backend"] == 2
    assert len(server.requests) == 1


async def test_connections_are_reused(exporter: Any, server: OTLPServer):
    """Consecutive exports travel on one kept-alive connection."""
    for _ in range(3):
        await exporter.export(TRACE)
    assert len({r.peer for r in server.requests}) == 1


async def test_request_size_cap_splits_a_big_batch(kind: str, server: OTLPServer):
    """A batch bigger than `max_request_bytes` goes in several requests, each span exactly once."""
    big = [{**TRACE[0], "span_id": f"{i + 1:016x}", "output": "x" * 600} for i in range(40)]
    exp = make(kind, server.url, max_request_bytes=4096)
    try:
        await exp.export(big)
    finally:
        await exp.aclose()
    assert len(server.requests) > 1
    assert all(len(r.body) <= 4096 for r in server.requests)
    assert sorted(s["span_id"] for s in server.spans()) == sorted(r["span_id"] for r in big)


async def test_413_splits_the_batch_in_halves(exporter: Any, server: OTLPServer):
    """A 413 for a multi-span request splits it; every span arrives once."""
    server.script(Reply.status(413, "too large"))
    await exporter.export(TRACE)
    assert [len(r.spans) for r in server.requests] == [5, 2, 3]
    assert sorted(s["span_id"] for s in server.requests[1].spans + server.requests[2].spans) == sorted(
        r["span_id"] for r in TRACE)


async def test_one_request_per_project_and_retry_resends_only_the_failed_one(exporter: Any, server: OTLPServer):
    """Spans of two projects go in two requests; after a 503 on the second, the retry sends only it."""
    batch = TRACE[:2] + [{**rec, "project": "other"} for rec in TRACE[2:]]
    server.script(Reply.ok(), Reply.status(503))
    with pytest.raises(RetryableExportError):
        await exporter.export(batch)
    await exporter.export(batch)
    assert [len(r.spans) for r in server.requests] == [2, 3, 3]
    assert exporter.statistics()["skipped_redelivery"] == 2


async def test_otlp_http_json_encoding(server: OTLPServer):
    """`encoding: json` sends OTLP/JSON (hex ids, lists of key-values) that decodes to the same spans."""
    exp = make("otlp_http", server.url, encoding="json", compression="none")
    try:
        await exp.export(TRACE)
    finally:
        await exp.aclose()
    (request,) = server.requests
    assert request.header("content-type") == "application/json"
    assert request.error == ""
    body = orjson.loads(request.body)
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == TRACE[0]["trace_id"] and isinstance(span["attributes"], list)
    assert sorted(s["span_id"] for s in request.spans) == sorted(r["span_id"] for r in TRACE)


async def test_otlp_http_json_partial_success(server: OTLPServer):
    """A JSON partial success is read too."""
    server.script(Reply.partial(1))
    exp = make("otlp_http", server.url, encoding="json")
    try:
        await exp.export(TRACE)
    finally:
        await exp.aclose()
    assert exp.ctx.counters.dropped["rejected_by_backend"] == 1


async def test_langfuse_project_without_keys_is_permanent_and_others_still_go(server: OTLPServer):
    """With only per-project keys, a span of an unknown project fails permanently; known ones are sent."""
    exp = make("langfuse", server.url, public_key="", secret_key="",
               projects={"hinbox": {"public_key": "pk-1", "secret_key": SECRET}})
    batch = TRACE[:2] + [{**rec, "project": "nobody"} for rec in TRACE[2:]]
    try:
        with pytest.raises(PermanentExportError) as info:
            await exp.export(batch)
    finally:
        await exp.aclose()
    assert "projects.nobody" in str(info.value)
    assert [len(r.spans) for r in server.requests] == [2]


def test_parse_retry_after():
    """Retry-After: seconds, HTTP date (relative to now), and garbage."""
    assert parse_retry_after("12") == 12
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 60) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_excerpt_scrubs_and_shortens():
    """Excerpts are one short line with known secrets and bearer/basic tokens replaced by ***."""
    text = excerpt(b"line one\n  Basic cGs6c2s= and " + SECRET.encode() + b" " + b"y" * 1000, [SECRET])
    assert "\n" not in text and len(text) <= 300
    assert "cGs6c2s=" not in text and SECRET not in text


async def test_big_request_is_gzipped_and_arrives_whole(exporter: Any, server: OTLPServer):
    """A request body of several hundred KiB (gzipped in a worker thread) arrives whole, in one request."""
    big = [{**TRACE[i % 5], "span_id": f"{i + 1:016x}", "output": "y" * 2000} for i in range(300)]
    await exporter.export(big)
    (request,) = server.requests
    assert len(request.body) > 256 * 1024 and request.header("content-encoding") == "gzip"
    assert len(request.spans) == 300
