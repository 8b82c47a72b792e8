"""The daemon's log: one line per event on stderr (for the journal), repeats rate-limited, secrets scrubbed.

- One line per event: a message or traceback spanning lines is joined with ` | `, so the journal keeps it
  as one entry. Under systemd (`$JOURNAL_STREAM` names our stderr) each line starts with its syslog
  priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) instead of a timestamp, so
  `journalctl -p warning` works; elsewhere lines read `2026-01-01 12:00:00,000 WARNING shipper.x: ...`.
- Repeats: messages that differ only in their numbers (an exporter failing every second, a sender refused
  on every connect) pass once per `interval`; the next one to pass says how many were suppressed, and
  what is still pending is reported by `flush()` at exit.
- Secrets: every value registered with `security.remember()` (the config's `Secret`s) is replaced by
  `***` in each line, tracebacks included, whatever code logged it.
- `log_format: json`: one JSON object per line (`ts`, `level`, `logger`, `message`, and `exc` for a
  traceback), for journald's and Loki's JSON parsers; the same redaction and rate limit apply.
- DEBUG lines are never held back: whoever turns debug on wants to see everything. Below debug, the
  HTTP libraries' per-request lines (`httpx`, `httpcore`) are left out: shipper logs what fails itself.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import TextIO

from shipper.security import redact

__all__ = ["JSONFormatter", "JournalFormatter", "RepeatFilter", "configure", "flush"]

_NUMBER = re.compile(r"\d+")
_CHATTY = ("httpx", "httpcore", "asyncio")
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Formats a record as one line, secrets replaced by `***`; syslog priority prefix for the journal."""

    def __init__(self, journal: bool = False) -> None:
        fmt = "%(name)s: %(message)s" if journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(line for line in redact(super().format(record)).splitlines() if line.strip())
        if self.journal:
            level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
            text = f"<{_PRIORITY[level]}>{text}"
        return text


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line, secrets replaced by `***`."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime
        import json

        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class RepeatFilter(logging.Filter):
    """Lets a message through once per `interval` seconds; counts the similar ones it holds back."""

    def __init__(self, interval: float = 30.0, max_keys: int = 2048) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._seen: dict[tuple[str, int, str], list[float | int]] = {}  # key: [passed_at, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True
        now = time.monotonic()
        key = (record.name, record.levelno, _NUMBER.sub("#", record.getMessage()))
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.msg = f"{record.getMessage()} ({entry[1]} similar messages suppressed in the last " \
                         f"{now - entry[0]:.0f}s)"
            record.args = None
        if len(self._seen) >= self.max_keys:
            self._prune(now)
        self._seen[key] = [now, 0]
        return True

    def _prune(self, now: float) -> None:
        for key in [k for k, (at, n) in self._seen.items() if now - at >= self.interval and not n]:
            del self._seen[key]
        while len(self._seen) >= self.max_keys:
            del self._seen[next(iter(self._seen))]

    def pending(self) -> list[tuple[str, int, int]]:
        """(logger, level, count) of messages suppressed and not yet reported; clears them."""
        out = [(name, level, int(n)) for (name, level, _), (_, n) in self._seen.items() if n]
        for entry in self._seen.values():
            entry[1] = 0
        return out


_handler: logging.Handler | None = None
_repeats: RepeatFilter | None = None


def _under_journal(stream: TextIO) -> bool:
    """True when `stream` is the journal stream systemd connected (`$JOURNAL_STREAM` is `dev:ino`)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def configure(level: str = "info", interval: float = 30.0, stream: TextIO | None = None,
              log_format: str = "text") -> logging.Handler:
    """Send the root logger to stderr, one line per event (text or JSON), rate-limited; replaces an earlier one."""
    global _handler, _repeats
    stream = stream or sys.stderr
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter() if log_format == "json" else JournalFormatter(journal=_under_journal(stream)))
    _repeats = RepeatFilter(interval)
    handler.addFilter(_repeats)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if level.lower() == "debug" else logging.WARNING)
    _handler = handler
    return handler


def flush() -> None:
    """Report the repeats suppressed since they last passed (call at exit)."""
    if _repeats is None:
        return
    for name, level, count in _repeats.pending():
        logging.getLogger(name).log(level, "%d similar messages were suppressed before exit.", count)
