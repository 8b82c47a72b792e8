"""`shipper check --explain RECORD`: what each processor of a config would do to one record, and why.

RECORD is a JSON file holding one record, a JSON list of records, or NDJSON (one a line, e.g. a whole
trace, which tail sampling needs to decide). For each record: the shared processors in order, then
each exporter's own, each line saying which rule applies and what happens (kept, redacted and which
fields, truncated, dropped and under which counted reason). Each record is run through freshly built
processors with the other records of its trace, as a daemon receiving the file as one batch would;
what depends on load (rate limits) or time (`decision_wait`) is described, not simulated.
Exit 0 when every record was explained, 1 when the file cannot be read or a record is malformed.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from shipper.chain import build_chain
from shipper.config import ComponentSpec, Config
from shipper.errors import RecordError
from shipper.record import Record, validate
from shipper.stats import Stats

__all__ = ["explain"]


def _read(path: str) -> list[Any]:
    data = Path(path).read_bytes()
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return whole if isinstance(whole, list) else [whole]


def _run(processor: Any, trace: list[Record]) -> list[Record]:
    """What `processor` lets through of `trace`, fed as one batch (held spans released at once)."""
    out = processor([copy.deepcopy(s) for s in trace])
    if hasattr(processor, "flush"):
        out = out + processor.flush(True)
    return out  # type: ignore[no-any-return]


def _walk(specs: list[ComponentSpec], scope: str, span: Record, trace: list[Record], config: Config,
          lines: list[str]) -> tuple[Record | None, list[Record], str]:
    """Run the trace through the processors of `specs`, a line per processor about `span`.

    Returns `span` as it comes out (None when dropped), what is left of its trace, and who dropped it.
    """
    chain = build_chain(specs, Stats(), Path(config.settings.state_dir), scope, config.settings.max_record_bytes)
    for i, (spec, processor) in enumerate(zip(specs, chain.processors, strict=True)):
        describe = getattr(processor, "explain", None)
        text = describe(span, trace) if describe is not None else ""
        trace = _run(processor, trace)
        after = next((s for s in trace if s["span_id"] == span["span_id"]), None)
        lines.append(f"    {i + 1}. {spec.type}: {text or ('kept' if after is not None else 'dropped')}")
        if after is None:
            return None, trace, f"{scope}[{i}] {spec.type}"
        span = after
    return span, trace, ""


def _explain_one(config: Config, span: Record, trace: list[Record], out: TextIO) -> None:
    lines = [f'span {span["span_id"]} "{span["name"]}" ({span.get("kind", "span")}) of trace {span["trace_id"]}']
    if config.processors:
        lines.append("  shared processors:")
    else:
        lines.append("  shared processors: none")
    shared, trace, dropped_by = _walk(config.processors, "processors", span, trace, config, lines)
    if shared is None:
        lines.append(f"  => dropped by {dropped_by}: no exporter gets it")
        print("\n".join(lines), file=out)
        return
    exported: list[str] = []
    dropped: list[str] = []
    for exporter in config.exporters:
        if not exporter.processors:
            lines.append(f"  exporter {exporter.name} ({exporter.type}): no processors of its own")
            exported.append(exporter.name)
            continue
        lines.append(f"  exporter {exporter.name} ({exporter.type}), its own processors:")
        result, _, by = _walk(exporter.processors, f"exporters.{exporter.name}.processors", shared, trace,
                              config, lines)
        (exported if result is not None else dropped).append(exporter.name if result is not None
                                                             else f"{exporter.name} (by {by})")
    lines.append(f"  => exported to: {', '.join(exported) or 'none'}"
                 + (f"; dropped for: {', '.join(dropped)}" if dropped else ""))
    print("\n".join(lines), file=out)


def explain(config: Config, record_path: str, out: TextIO | None = None) -> int:
    """Print what the processors of `config` do to each record in `record_path`; the exit code."""
    out = out or sys.stdout
    try:
        raw = _read(record_path)
    except OSError as exc:
        print(f"shipper: cannot read the record file {record_path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except orjson.JSONDecodeError as exc:
        print(f"shipper: {record_path} is neither JSON nor NDJSON: {exc}", file=sys.stderr)
        return 1
    if not raw:
        print(f"shipper: {record_path} holds no record", file=sys.stderr)
        return 1
    records: list[tuple[int, Record]] = []
    status = 0
    for n, rec in enumerate(raw, 1):
        try:
            records.append((n, validate(rec)))
        except RecordError as exc:
            print(f"record {n}: malformed ({exc.reason}: {exc.detail}); the daemon would count it as malformed "
                  "and set it aside, no processor sees it", file=out)
            status = 1
    for n, span in records:
        trace = [s for _, s in records if s["trace_id"] == span["trace_id"]]
        print(f"record {n}: ", end="", file=out)
        _explain_one(config, span, trace, out)
    return status
