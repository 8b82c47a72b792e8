"""The one exception tree of the daemon side.

    ShipperError                  anything shipper raises on purpose
    ├── ConfigError               the configuration is invalid; `.problems` lists every one, each with
    │                             its file, key path and what was expected
    ├── RecordError               one record is malformed; `.reason` is the counted reason
    ├── ExportError               an exporter could not deliver a batch
    │   ├── RetryableExportError  try again later (`.retry_after` seconds when the backend said so)
    │   └── PermanentExportError  never retry: dead-letter the batch (`.excerpt` is secrets-free)
    ├── ControlError              the running daemon could not be reached or refused a command
    └── QueueBusyError            an exporter's on-disk queue is locked by another process

Library errors (OSError, httpx, yaml) are translated into these at the boundary, `raise ... from exc`.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ControlError",
    "ExportError",
    "PermanentExportError",
    "QueueBusyError",
    "RecordError",
    "RetryableExportError",
    "ShipperError",
]


class ShipperError(Exception):
    """Base of every error shipper raises on purpose."""


class ConfigError(ShipperError):
    """The configuration is invalid; every problem found is in `problems`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RecordError(ShipperError):
    """One record is malformed; `reason` is the short name it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ExportError(ShipperError):
    """An exporter could not deliver a batch."""

    def __init__(self, message: str, *, status: int | None = None, excerpt: str = "") -> None:
        self.status = status
        self.excerpt = excerpt
        super().__init__(message)


class RetryableExportError(ExportError):
    """The backend may take the batch later: connection errors, timeouts, 408, 429, 5xx but 501."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        excerpt: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, excerpt=excerpt)
        self.retry_after = retry_after


class PermanentExportError(ExportError):
    """The backend will never take this batch: dead-letter it with the (secrets-free) answer."""


class ControlError(ShipperError):
    """The running daemon could not be reached, or refused a command."""


class QueueBusyError(ShipperError):
    """An exporter's on-disk queue is locked by another shipper process (a daemon or a replay)."""
