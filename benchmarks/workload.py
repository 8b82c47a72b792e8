"""The one LLM span every option records, and how each option records it (a zero-argument `one()` per span).

The span: `llm.completion`, kind llm, a 200-character prompt as input, a 100-character answer as output,
and 9 attributes (model, provider, operation, temperature, max_tokens, input/output/total tokens, cost):
five known when the call starts, four when it returns, as an instrumented LLM client would set them.

Options (`OPTIONS`): `none` (the call, untraced), `floor` (build the record shipper would, orjson, one
non-blocking send on a connected SOCK_SEQPACKET socket: what no tracer on this transport can beat),
`span` (`with shipper.span(...)`), `traced` (`@shipper.traced`), `otel` (the OpenTelemetry SDK with a
BatchSpanProcessor and the OTLP/HTTP protobuf exporter to a sink in another process).
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

OPTIONS = ("none", "floor", "span", "traced", "otel")
NAME = "llm.completion"
PROMPT = ("You are a careful assistant. Summarise the customer's last three messages in one sentence, "
          "then list any product names they mention, and say whether they sound satisfied or not.")[:200].ljust(200, ".")
OUTPUT = "The customer wants a refund for the X200 headset; mentions X200 and the Pro plan; not satisfied."[:100].ljust(100, ".")
REQUEST = {"model": "gpt-4o-mini", "provider": "openai", "operation": "chat",
           "params": {"temperature": 0.2, "max_tokens": 256}}
RESULT = {"usage": {"input_tokens": 52, "output_tokens": 27, "total_tokens": 79}, "cost_usd": 0.0000240}
OTEL_REQUEST = {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.system": "openai", "gen_ai.operation.name": "chat",
                "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 256, "input.value": PROMPT}
OTEL_RESULT = {"gen_ai.usage.input_tokens": 52, "gen_ai.usage.output_tokens": 27, "llm.token_count.total": 79,
               "llm.cost.total": 0.0000240}

assert len(PROMPT) == 200 and len(OUTPUT) == 100


def complete(prompt: str) -> str:
    """The 'LLM call' being traced: returns at once, so what is measured is the tracing."""
    return OUTPUT


Recorder = tuple[Callable[[], None], Callable[[], None], Callable[[], dict[str, Any]]]


def recorder(option: str, socket_path: str = "", spool_dir: str = "", sink_url: str = "") -> Recorder:
    """(one span, flush, info) for an option; info() says what happened to the spans (sent, spooled...)."""
    return _BUILDERS[option](socket_path, spool_dir, sink_url)


def _none(*_: str) -> Recorder:
    def one() -> None:
        complete(PROMPT)

    return one, _nothing, dict


def _nothing() -> None:
    pass


def _floor(socket_path: str, *_: str) -> Recorder:
    import orjson

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect(socket_path)
    send, dumps, option, time_ns = sock.send, orjson.dumps, orjson.OPT_APPEND_NEWLINE, time.time_ns
    bits = random.Random().getrandbits
    resource = {"process.pid": os.getpid()}
    counts = {"sent": 0, "failed": 0}

    def one() -> None:
        start = time_ns()
        output = complete(PROMPT)
        record = {"v": 1, "trace_id": "%032x" % (bits(128) or 1), "span_id": "%016x" % (bits(64) or 1), "name": NAME,
                  "kind": "llm", "start_ns": start, "end_ns": time_ns(), "service": "bench", "resource": resource,
                  "input": PROMPT, "output": output,
                  "llm": {"model": "gpt-4o-mini", "provider": "openai", "operation": "chat",
                          "params": {"temperature": 0.2, "max_tokens": 256},
                          "usage": {"input_tokens": 52, "output_tokens": 27, "total_tokens": 79},
                          "cost_usd": 0.0000240}}
        try:
            send(dumps(record, option=option))
            counts["sent"] += 1
        except OSError:  # EAGAIN: the floor has no fallback; counted, not retried
            counts["failed"] += 1

    return one, _nothing, lambda: dict(counts)


def _shipper(socket_path: str, spool_dir: str) -> Any:
    import shipper

    shipper.configure(service="bench", socket=socket_path, spool_dir=spool_dir, mode="auto")
    return shipper


def _span(socket_path: str, spool_dir: str, *_: str) -> Recorder:
    shipper = _shipper(socket_path, spool_dir)
    span = shipper.span

    def one() -> None:
        with span(NAME, kind="llm", input=PROMPT, llm=REQUEST) as s:
            output = complete(PROMPT)
            s.log(output=output, llm=RESULT)

    return one, shipper.flush, shipper.statistics


def _traced(socket_path: str, spool_dir: str, *_: str) -> Recorder:
    shipper = _shipper(socket_path, spool_dir)
    current_span = shipper.current_span
    everything = {**REQUEST, **RESULT}

    @shipper.traced(name=NAME, kind="llm")
    def traced_complete(prompt: str) -> str:
        current_span().log(llm=everything)
        return OUTPUT

    def one() -> None:
        traced_complete(PROMPT)

    return one, shipper.flush, shipper.statistics


def _otel(socket_path: str, spool_dir: str, sink_url: str) -> Recorder:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink_url}/v1/traces")))
    start_span = provider.get_tracer("bench").start_as_current_span

    def one() -> None:
        with start_span(NAME, attributes=OTEL_REQUEST) as s:
            output = complete(PROMPT)
            s.set_attributes(OTEL_RESULT)
            s.set_attribute("output.value", output)

    def flush() -> None:
        provider.force_flush(30_000)

    return one, flush, dict


_BUILDERS: dict[str, Callable[..., Recorder]] = {
    "none": _none, "floor": _floor, "span": _span, "traced": _traced, "otel": _otel,
}


def sample_record(rng: random.Random, end_ns: int) -> dict[str, Any]:
    """The record shipper's client writes for the benchmark span (for load generators)."""
    return {"v": 1, "trace_id": "%032x" % (rng.getrandbits(128) or 1), "span_id": "%016x" % (rng.getrandbits(64) or 1),
            "name": NAME, "kind": "llm", "start_ns": end_ns - 1_000_000, "end_ns": end_ns, "service": "bench",
            "resource": {"process.pid": os.getpid()}, "input": PROMPT, "output": OUTPUT,
            "llm": {**REQUEST, **RESULT}}
