"""The one exception tree of the daemon side.

    ShipperError                  anything shipper raises on purpose
    ├── ConfigError               the configuration is invalid; `.problems` lists every one, each with
    │                             its file, key path and what was expected
    ├── RecordError               one record is malformed; `.reason` is the counted reason
    ├── ExportError               an exporter could not deliver a batch
    │   ├── RetryableExportError  try again later (`.retry_after` seconds when the backend said so):
    │   │   │                     connection errors, timeouts and the statuses in RETRYABLE_STATUSES
    │   │   └── AuthExportError   401/403 (AUTH_STATUSES): the credentials are refused; retried (they
    │   │                         may be fixed, or an account unsuspended) but loudly, every
    │   │                         `retry.max_interval`, never with a fast backoff
    │   └── PermanentExportError  never retry: dead-letter the batch (`.excerpt` is secrets-free):
    │                             every other non-2xx answer
    ├── ControlError              the running daemon could not be reached or refused a command
    └── QueueBusyError            an exporter's on-disk queue is locked by another process

Library errors (OSError, httpx, yaml) are translated into these at the boundary, `raise ... from exc`.
`RETRYABLE_STATUSES` and `AUTH_STATUSES` are the one list of HTTP answers that are tried again; every
exporter and docstring refers to them instead of repeating the numbers.
"""

from __future__ import annotations

__all__ = [
    "AUTH_STATUSES",
    "RETRYABLE_STATUSES",
    "AuthExportError",
    "ConfigError",
    "ControlError",
    "ExportError",
    "PermanentExportError",
    "QueueBusyError",
    "RecordError",
    "RetryableExportError",
    "ShipperError",
]

AUTH_STATUSES = frozenset({401, 403})
"""Answers that mean the credentials are refused: `AuthExportError` (retried slowly and loudly)."""
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)} - {501})
"""Answers that mean "try again later": `RetryableExportError` (408, 429, 5xx except 501)."""


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
    """The backend may take the batch later: connection errors, timeouts, `RETRYABLE_STATUSES`."""

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


class AuthExportError(RetryableExportError):
    """The backend refused the credentials (`AUTH_STATUSES`): an operator must act. Retried every
    `retry.max_interval` (delivery.py) and logged as an error at each attempt, never dead-lettered as
    rejected: fixing the key (and restarting) delivers what waited in the queue."""


class PermanentExportError(ExportError):
    """The backend will never take this batch: dead-letter it with the (secrets-free) answer."""


class ControlError(ShipperError):
    """The running daemon could not be reached, or refused a command."""


class QueueBusyError(ShipperError):
    """An exporter's on-disk queue is locked by another shipper process (a daemon or a replay)."""
