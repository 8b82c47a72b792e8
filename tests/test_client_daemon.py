"""The shim against the real daemon: records over the socket, and spool files read then deleted when done."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from support import Daemon, wait_for

import shipper
from shipper.client import transport


@pytest.fixture
def daemon(daemon_factory: Any) -> Iterator[Daemon]:
    """A daemon (socket and spool receivers, file exporter) that is not started yet; the shim points at it."""
    made = daemon_factory()
    shipper.configure(service="e2e", socket=made.socket, spool_dir=made.spool)
    yield made
    transport.shutdown()


def names(records: list[dict[str, Any]]) -> list[str]:
    return sorted(record["name"] for record in records)


def test_spans_reach_the_daemon_over_the_socket(daemon: Daemon) -> None:
    """Spans of a running daemon's client are exported as they were built, trace-wide fields included."""
    daemon.start()
    with shipper.trace_context(session_id="s-e2e"), shipper.span("root", kind="chain"):
        with shipper.span("child", kind="llm") as child:
            child.log(llm={"model": "m", "usage": {"input_tokens": 3}}, output="hi")
    records = wait_for(lambda: len(daemon.records()) >= 2 and daemon.records(), message="2 exported records")
    assert names(records) == ["child", "root"]
    assert all(record["session_id"] == "s-e2e" and record["service"] == "e2e" for record in records)
    assert shipper.statistics()["sent"] == 2


def test_spooled_spans_are_read_and_the_file_deleted_once_released(daemon: Daemon) -> None:
    """Spans spooled while the daemon is down are delivered when it starts; it deletes the spool file only
    after the writer closes it (releasing its lock)."""
    for i in range(3):
        with shipper.span(f"offline {i}"):
            pass
    spool_file = shipper.statistics()["spool_file"]
    assert spool_file and shipper.statistics()["spooled"] == 3
    daemon.start()
    records = wait_for(lambda: len(daemon.records()) >= 3 and daemon.records(), message="3 spooled records")
    assert names(records) == ["offline 0", "offline 1", "offline 2"]
    assert os.path.exists(spool_file), "a file still locked by its writer must not be deleted"
    transport.shutdown()
    wait_for(lambda: not os.path.exists(spool_file), message="the released spool file to be deleted")
