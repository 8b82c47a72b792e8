"""Fixtures shared by the whole suite."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Daemon  # noqa: E402


@pytest.fixture
def daemon_factory() -> Iterator[type[Daemon]]:
    """Make `Daemon`s that are killed and cleaned up after the test."""
    made: list[Daemon] = []

    def make(*args, **kwargs) -> Daemon:
        daemon = Daemon(*args, **kwargs)
        made.append(daemon)
        return daemon

    yield make  # type: ignore[misc]
    for daemon in made:
        daemon.cleanup()
