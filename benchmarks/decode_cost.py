"""In-process cost of decoding OTLP protobuf requests into records: `python -m benchmarks.decode_cost [--n N]`.

The otlp_http / otlp_grpc receivers' part of `python -m benchmarks.profile daemon otlp_in`, without the
daemon: N spans of `benchmarks.otlp_load` in requests of 512, decoded by `decode_body` (what the receivers
call: the fast path) and by the general path (`ExportTraceServiceRequest.FromString` + `decode_spans`),
best of `--repeat` runs, in us of CPU per span. Two workloads: the benchmark's own (every span has the
same attribute values), and the same spans with their prompt, answer, token counts and cost varied per
span, as real traffic is (fewer KeyValues repeat, so fewer come from the fast path's cache).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.otlp_load import requests
from shipper.receivers.otlp_intake import decode_body, decode_spans

LIMIT = 16 * 1024 * 1024


def varied(bodies: list[bytes], rng: random.Random) -> list[bytes]:
    """The requests with each span's input / output text, integer attributes and cost made its own."""
    out = []
    for body in bodies:
        message = ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    for kv in span.attributes:
                        value = kv.value
                        if kv.key in ("input.value", "output.value"):
                            value.string_value = f"{rng.random():.12f} {value.string_value[15:]}"
                        elif value.WhichOneof("value") == "int_value":
                            value.int_value = rng.randrange(1, 5000)
                        elif kv.key == "llm.cost.total":
                            value.double_value = rng.random() / 1000
        out.append(message.SerializeToString())
    return out


def _best(bodies: list[bytes], decode: Callable[[bytes], object], repeat: int) -> float:
    spans = sum(len(ss.spans) for b in bodies for rs in ExportTraceServiceRequest.FromString(b).resource_spans
                for ss in rs.scope_spans)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for body in bodies:
            decode(body)
        best = min(best, time.process_time() - t0)
    return best / spans * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    same = requests(args.n, 512, random.Random(1))
    for name, bodies in (("benchmark workload", same), ("varied values", varied(same, random.Random(2)))):
        fast = _best(bodies, lambda b: decode_body(b, LIMIT), args.repeat)
        general = _best(bodies, lambda b: decode_spans(ExportTraceServiceRequest.FromString(b), LIMIT), args.repeat)
        print(f"{name:20s} decode_body {fast:6.2f} us/span   general path {general:6.2f} us/span")
    return 0


if __name__ == "__main__":
    sys.exit(main())
