"""Dead letters: batches an exporter gave up on, kept as NDJSON so `shipper replay` can send them again.

File: `<state_dir>/deadletter/<exporter>.ndjson`, one line per batch given up, written with one
`write()` (`O_APPEND`), so a line is whole or absent:

    {"dead_letter": 1, "exporter": "phoenix", "reason": "rejected_by_backend" | "expired",
     "status": 400 | null, "error": "<what the exporter said>", "excerpt": "<start of the backend's answer>",
     "at": "2026-11-21T10:20:00Z", "count": 2, "records": [<span record>, ...]}

Invariants:
- `records` are the span records as the exporter received them (after every processor), so replaying
  them sends the same spans again; `reason` is the reason they were counted under (docs/transports.md, Drop reasons).
- `error` and `excerpt` come from the exporter's `ExportError`, which keeps secrets out of them; the
  excerpt is cut to `MAX_EXCERPT` characters here too.
- The file only grows; an operator replays it (`shipper replay FILE`) and then removes or moves it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from shipper import security
from shipper.record import Record

__all__ = ["MAX_EXCERPT", "DeadLetters", "read_lines"]

log = logging.getLogger("shipper.deadletter")

MAX_EXCERPT = 1024


class DeadLetters:
    """Appends given-up batches of one exporter to its dead-letter file."""

    def __init__(self, directory: Path, exporter: str) -> None:
        self.exporter = exporter
        self.path = Path(directory) / f"{exporter}.ndjson"

    def write(self, records: list[Record], reason: str, *, status: int | None = None, error: str = "",
              excerpt: str = "") -> bool:
        """Append one dead-letter line; False (and an error logged) when the file cannot be written."""
        line = orjson.dumps({
            "dead_letter": 1,
            "exporter": self.exporter,
            "reason": reason,
            "status": status,
            "error": security.redact(error)[:MAX_EXCERPT],
            "excerpt": security.redact(excerpt)[:MAX_EXCERPT],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "count": len(records),
            "records": records,
        }) + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("Cannot write %d dead-lettered spans of exporter %s to %s: %s; they are lost.",
                      len(records), self.exporter, self.path, exc.strerror)
            return False
        return True

    def statistics(self) -> dict[str, Any]:
        """Where the dead letters go and how big the file is."""
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return {"deadletter_file": str(self.path), "deadletter_bytes": size}


def read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str | None, list[Record]]]:
    """(line number, exporter or None, records) per line of a dead-letter file or of plain span NDJSON
    (file-exporter output, spool files); a line that is neither raises ValueError naming it."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
            if not isinstance(value, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object (a span record or a dead letter)")
            if value.get("dead_letter") and isinstance(value.get("records"), list):
                yield number, value.get("exporter"), value["records"]
            else:
                yield number, None, [value]
