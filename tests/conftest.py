"""Fixtures shared by the whole suite."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Daemon


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


@pytest.fixture(scope="module")
def shipped_daemon() -> Iterator[Daemon]:
    """A daemon subprocess (socket, spool, file output) with this process's shipper client sending to it."""
    import shipper
    from shipper.client import transport

    daemon = Daemon()
    daemon.config["exporters"]["file"]["batch"] = {"max_delay": "50ms"}  # records show up within ~0.1 s
    daemon.set_config().start()
    shipper.configure(service="tests", socket=daemon.socket, spool_dir=daemon.spool)
    yield daemon
    transport.shutdown()
    daemon.cleanup()

