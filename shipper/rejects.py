"""Where malformed input is set aside: `<state_dir>/rejected/rejected.ndjson`, one JSON object a line.

Each line is `{"time_ns", "source", "reason", "detail", "line"}` with the offending bytes as text (capped
at 64 KiB), so an operator can see what a sender got wrong and re-send it once fixed. The file rotates to
`rejected.ndjson.1` past `max_bytes`; only one old file is kept, so bad input can never fill the disk.

What is written goes through the `redact` processor's default rules (the built-in `secrets` group:
API keys, bearer tokens, AWS keys, private keys, and the values of secret-named keys), the same defaults
exported records get, so a secret in a malformed record never rests unmasked on disk outside the spool
and the queues. A line that is JSON is redacted as a structure (secret-named keys masked whole); any other
line as text (value patterns only). Each line says so: `"redacted": "secrets"`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import orjson

from shipper.component import Context
from shipper.processors.redact import RedactConfig, RedactProcessor
from shipper.record import Reject
from shipper.stats import Counters

__all__ = ["RejectLog"]

log = logging.getLogger("shipper.rejects")


class RejectLog:
    """Appends rejected lines with their reasons; rotates by size."""

    def __init__(self, directory: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.path = directory / "rejected.ndjson"
        self.max_bytes = max_bytes
        self.counters = Counters()
        self._redact = RedactProcessor(RedactConfig(), Context(name="rejects", state_dir=directory, counters=self.counters))

    def _masked(self, line: bytes) -> str:
        """The offending bytes as text, with the default redaction applied."""
        text = line.decode("utf-8", "replace")
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self._redact.text(text)
        if isinstance(parsed, (dict, list)):
            masked = self._redact.value(parsed)
            return text if masked is parsed else orjson.dumps(masked).decode()
        return self._redact.text(text)

    def write(self, source: str, rejects: list[Reject]) -> None:
        """Set `rejects` aside; failure to write is logged, never raised (the counts stay right)."""
        now = time.time_ns()
        data = b"".join(
            orjson.dumps({
                "time_ns": now,
                "source": source,
                "reason": r.reason,
                "detail": self._redact.text(r.detail),
                "line": self._masked(r.line),
                "redacted": "secrets",
            }) + b"\n"
            for r in rejects
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if self.path.stat().st_size + len(data) > self.max_bytes:
                    os.replace(self.path, self.path.with_name("rejected.ndjson.1"))
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("Cannot set %d rejected records aside in %s: %s.", len(rejects), self.path, exc.strerror)
