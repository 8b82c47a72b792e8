"""Receiver `otlp_grpc`: OTLP/gRPC traces from any OpenTelemetry SDK (needs the extra `shipper[grpc]`).

Point an unmodified app at it (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`, `OTEL_EXPORTER_OTLP_ENDPOINT=
http://127.0.0.1:4317`, the default of many Java, Go and .NET setups):

    opentelemetry.proto.collector.trace.v1.TraceService/Export     traces (gzip or not; grpc decompresses)
    ...metrics.v1.MetricsService/Export, ...logs.v1.LogsService/Export    UNIMPLEMENTED: traces only

It is the otlp_http receiver over another wire: the same limits (`max_body_bytes`, `timeout`), the same
decode path and durability answer (`shipper.receivers.otlp_intake`): OK, with `partial_success` for spans
that are not valid records, only once the request's records are in every exporter's queue; UNAVAILABLE
(with a RetryInfo of `RETRY_AFTER` seconds, which the OpenTelemetry exporters honour) when the daemon's
intake is full or the records were not made durable within `timeout`; INVALID_ARGUMENT for a body that
is not an ExportTraceServiceRequest; RESOURCE_EXHAUSTED (from grpc itself) over `max_body_bytes` or
`max_concurrent_requests`; INTERNAL for a fault of shipper's own (logged; the receiver serves on).
Each request's peer (`ipv4:127.0.0.1:PORT`) is its source in logs and in the rejects file.

grpc.aio runs on the daemon's asyncio event loop (anyio's asyncio backend): handlers are coroutines in
the same loop as the pipeline, so handing over and waiting for the commit are plain awaits. The port is
bound in `open()`; with port 0 the port the system chose shows in the log line and in
`statistics()["port"]`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
from google.protobuf.message import DecodeError

from shipper.component import Context, Deliver
from shipper.errors import ConfigError
from shipper.receivers.otlp_http import parse_endpoint
from shipper.receivers.otlp_intake import (
    RETRY_AFTER,
    Busy,
    Handover,
    export_response,
    grpc_endpoints,
    read_body_off_loop,
)
from shipper.values import ByteSize, Duration

try:
    import grpc
    from grpc import aio
except ImportError as exc:  # the config loader reports this message as a problem of the receiver's `type`
    raise ImportError(f"receiver type otlp_grpc needs grpcio, which is not installed ({exc}): "
                      "pip install 'shipper[grpc]'") from exc

__all__ = ["OTLPGRPCReceiver"]

log = logging.getLogger("shipper.receivers.otlp_grpc")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
OTHER_SERVICES = {"opentelemetry.proto.collector.metrics.v1.MetricsService": "metrics",
                  "opentelemetry.proto.collector.logs.v1.LogsService": "logs"}
# google.rpc.RetryInfo {retry_delay: Duration {seconds: RETRY_AFTER}}, hand-encoded (two nested fields).
_RETRY_INFO = b"\x0a\x02\x08" + bytes((RETRY_AFTER,))


@dataclass(kw_only=True)
class Config:
    """Where to listen and how much one request may carry (as otlp_http, plus concurrent requests)."""

    endpoint: str = "127.0.0.1:4317"
    max_body_bytes: ByteSize = field(default=16 * 1024 * 1024, metadata={"min": 1024})
    timeout: Duration = field(default=30.0, metadata={"min": 0.001})
    max_concurrent_requests: int = field(default=64, metadata={"min": 1})

    def check(self) -> list[str]:
        try:
            parse_endpoint(self.endpoint)
        except ValueError:
            return [f"endpoint: expected host:port like \"127.0.0.1:4317\" (port 0 picks a free one), "
                    f"got {self.endpoint!r}"]
        return []


class OTLPGRPCReceiver:
    """OTLP/gRPC TraceService on grpc.aio; one coroutine per request."""

    Config = Config
    answers_senders = True  # committed once queued or held by a tail sampler (shipper.component)

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.counters = ctx.counters
        self.host, self.port = parse_endpoint(config.endpoint)
        self._handover = Handover(ctx.counters, config.timeout)
        self._server: Any = None
        self._deliver: Deliver | None = None
        self._running = anyio.Event()
        self._active = 0

    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status`: where it listens (the bound port) and requests in flight."""
        return {"endpoint": self._endpoint(), "port": self.port, "active_requests": self._active}

    def _endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def open(self) -> None:
        """Bind; with port 0 the system picks the port, which `statistics()` then reports."""
        if self._server is not None:
            return
        limit = int(self.config.max_body_bytes)
        server = aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=self.config.max_concurrent_requests,
        )
        server.add_generic_rpc_handlers(self._handlers())
        error: RuntimeError | None = None
        try:
            port = server.add_insecure_port(self._endpoint())
        except RuntimeError as exc:  # grpc raises this when it cannot bind
            port, error = 0, exc
        if not port:
            await server.stop(None)
            raise ConfigError([f"receivers.{self.ctx.name}.endpoint: cannot listen on {self.config.endpoint}"
                               f"{f': {error}' if error else ''}; is another process using the port?"])
        self._server, self.port = server, port
        await server.start()
        grpc_endpoints.append(self._endpoint())
        log.info("Listening for OTLP/gRPC on %s (%s/Export).", self._endpoint(), TRACE_SERVICE)

    async def run(self, deliver: Deliver) -> None:
        """Serve until cancelled; requests that came before this wait for it (within their timeout)."""
        assert self._server is not None, "open() first"
        self._deliver = deliver
        self._running.set()
        await anyio.sleep_forever()

    async def commit(self, mark: Any) -> None:
        """The request of `mark` is durable: answer it OK."""
        self._handover.commit(mark)

    async def aclose(self) -> None:
        """Stop serving (requests in flight get a short grace to finish). Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._endpoint() in grpc_endpoints:
            grpc_endpoints.remove(self._endpoint())
        with anyio.CancelScope(shield=True):
            await server.stop(1.0)

    # -- requests ------------------------------------------------------------------------------------

    def _handlers(self) -> Any:
        traces = grpc.method_handlers_generic_handler(
            TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)})
        others = [grpc.method_handlers_generic_handler(
            service, {"Export": grpc.unary_unary_rpc_method_handler(self._traces_only(signal))})
            for service, signal in OTHER_SERVICES.items()]
        return [traces, *others]

    def _traces_only(self, signal: str) -> Any:
        async def refuse(body: bytes, context: aio.ServicerContext) -> None:
            self.counters.add("refused_requests")
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                f"shipper takes traces only; {signal} are not received (send them to an "
                                f"OpenTelemetry Collector); traces go to {TRACE_SERVICE}/Export")
        return refuse

    async def _export(self, body: bytes, context: aio.ServicerContext) -> bytes:
        self._active += 1
        try:
            return await self._take(body, context)
        finally:
            self._active -= 1

    async def _take(self, body: bytes, context: aio.ServicerContext) -> bytes:
        peer = context.peer() or ""
        source = f"{self.ctx.name} {peer.split(':', 1)[1]}" if ":" in peer else self.ctx.name
        busy: Busy | None = None
        unreadable: str | None = None
        try:
            try:  # parsed and decoded in one: DecodeError comes from the parsing only
                records, rejects, forwarded = await read_body_off_loop(body, self.ctx, self.counters)
            except DecodeError as exc:
                unreadable = f"the body is not a readable OTLP ExportTraceServiceRequest: {str(exc)[:200]}"
            else:
                with anyio.move_on_after(self.config.timeout):
                    await self._running.wait()
                if self._deliver is None:
                    raise Busy("shipper is starting; retry")
                await self._handover.take(records, rejects, source, len(body), self._deliver, body, forwarded)
        except Busy as exc:
            busy = exc
        except Exception as exc:  # a bug of ours: answer INTERNAL, keep serving others
            log.exception("Failed to handle an OTLP/gRPC request from %s; answered INTERNAL.", source)
            self.counters.last_error = f"INTERNAL: {type(exc).__name__}: {exc}"[:500]
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in shipper's otlp_grpc receiver")
        if unreadable is not None:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, unreadable)
        if busy is not None:
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", _RETRY_INFO),))
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, str(busy))
        return export_response(rejects).SerializeToString()

    async def _refuse(self, context: aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        self.counters.add("refused_requests")
        self.counters.last_error = f"{code.name}: {message}"
        await context.abort(code, message)

