"""The value types settings are written in: `Duration`, `ByteSize`, `Secret`.

Components annotate their `Config` fields with these; the loader (`shipper.config`) reads the YAML forms
(`250ms`, `16MiB`, `${API_KEY}`) into them. This module imports nothing of shipper's, so any component
can use it without importing the loader (which imports every component).
"""

from __future__ import annotations

from typing import Annotated

__all__ = ["ByteSize", "Duration", "MiB", "Secret"]

Duration = Annotated[float, "duration"]
"""Seconds; YAML may say `250ms`, `5s`, `2m`, `1h` or a plain number of seconds."""
ByteSize = Annotated[int, "bytes"]
"""Bytes; YAML may say `512KiB`, `16MiB`, `1GiB`, `10MB` or a plain integer."""

MiB = 1024 * 1024


class Secret:
    """A string that never prints: `str()` and `repr()` give `***`; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
