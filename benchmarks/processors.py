"""Processor throughput: `python -m benchmarks.processors` prints spans per second of each processor, in-process.

Input: the five records of the example trace (tests/examples/), copied into 10,000 traces with random trace ids
(50,000 spans of ~575 B JSON), fed in batches of 512, best of three runs; tail sampling is flushed at the
end of each run. Not part of `benchmarks run`: a quick figure for processor changes.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any

import orjson

from shipper import registry
from shipper.component import Context
from shipper.config import build_dataclass
from shipper.stats import Counters

EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "examples" / "valid-trace.ndjson"

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("sample head, rate 0.5", "sample", {"rate": 0.5}),
    ("sample head, 2 rules", "sample", {"rate": 0.1, "rules": [{"kind": "llm", "rate": 1}, {"service": "b*", "rate": 0}]}),
    ("sample tail, rate 0.1, cost/slow", "sample", {"rate": 0.1, "tail": {"cost_over": 0.01, "slower_than": "10s"}}),
    ("filter ai_only", "filter", {"ai_only": True}),
    ("redact default (secrets)", "redact", {}),
    ("redact secrets+email+phone+card", "redact", {"builtin": ["secrets", "email", "phone", "card_number"]}),
    ("truncate defaults", "truncate", {}),
    ("rate_limit (never limiting)", "rate_limit", {"spans_per_second": 1e9}),
]


def _build(type_name: str, settings: dict[str, Any]) -> Any:
    cls = registry.load("processors", type_name)
    problems: list[str] = []
    config = build_dataclass(cls.Config, settings, "", problems)
    assert not problems, problems
    return cls(config, Context(name=type_name, state_dir=Path("/nonexistent"), counters=Counters()))


def main() -> None:
    records = [orjson.loads(line) for line in EXAMPLE.read_bytes().splitlines() if line.strip()]
    rng = random.Random(1)
    spans = []
    for _ in range(10_000):
        trace_id = f"{rng.getrandbits(128) | 1:032x}"
        for record in records:
            span = copy.deepcopy(record)
            span["trace_id"] = trace_id
            spans.append(span)
    size = sum(len(orjson.dumps(s)) for s in spans[:5]) / 5
    print(f"{len(spans)} spans of {size:.0f} B JSON on average, batches of 512, best of 3")
    for label, type_name, settings in CASES:
        best = float("inf")
        for _ in range(3):
            processor = _build(type_name, settings)
            started = time.perf_counter()
            for i in range(0, len(spans), 512):
                processor(spans[i:i + 512])
            if hasattr(processor, "flush"):
                processor.flush(True)
            best = min(best, time.perf_counter() - started)
        print(f"{label:36s} {len(spans) / best / 1000:8.0f}k spans/s  {best / len(spans) * 1e6:6.1f} us/span")


if __name__ == "__main__":
    main()
