"""Hostile input in the spool directory (issue 10, items 1, 2 and 13): a local process that can write into
the spool must not freeze the daemon, make it read a file it was not handed, or have lines miscounted.
Real daemon subprocesses, real FIFOs, symlinks, hard links and sockets in the spool directory."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import orjson
import pytest
from support import Daemon, wait_for, wait_records

from shipper.control import ControlError
from shipper.testing import make_span, send_seqpacket


def line(i: int, **fields) -> bytes:
    return orjson.dumps(make_span(trace=i, span=i, name=f"spool-{i}", **fields)) + b"\n"


def spool_file(daemon: Daemon, name: str, data: bytes) -> Path:
    """A finished spool file (nobody holds its lock) written under a dot-name and renamed, as clients do."""
    spool = Path(daemon.spool)
    spool.mkdir(parents=True, exist_ok=True)
    tmp = spool / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.rename(spool / name)
    return spool / name


def status(daemon: Daemon) -> dict:
    return daemon.status()


def malformed(daemon: Daemon) -> dict:
    return status(daemon)["pipeline"].get("malformed", {})


def rejects(daemon: Daemon) -> list[dict]:
    path = daemon.state / "rejected" / "rejected.ndjson"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture
def daemon(daemon_factory) -> Daemon:
    d: Daemon = daemon_factory()
    Path(d.spool).mkdir(parents=True)
    return d


def test_a_fifo_in_the_spool_never_freezes_the_daemon(daemon: Daemon) -> None:
    """Item 1: `mkfifo SPOOL/x.1.1.ndjson` is counted `not_a_file` and removed; socket and spool intake go
    on, the control socket answers and SIGTERM still stops the daemon."""
    fifo = Path(daemon.spool) / "x.1.1.ndjson"
    os.mkfifo(fifo)
    daemon.start()
    try:
        wait_for(lambda: malformed(daemon).get("not_a_file") == 1, message="the FIFO counted not_a_file")
    except ControlError as exc:  # the event loop is stuck in open(): nothing answers
        pytest.fail(f"the daemon froze on a FIFO in its spool: {exc}")
    wait_for(lambda: not fifo.exists() and not os.path.lexists(fifo), message="the FIFO removed")
    spool_file(daemon, "app.2.2.ndjson", line(1))
    send_seqpacket(daemon.socket, [line(2)])
    wait_records(daemon, 2)
    assert {r["name"] for r in daemon.records()} == {"spool-1", "spool-2"}
    [reject] = [r for r in rejects(daemon) if r["reason"] == "not_a_file"]
    assert "x.1.1.ndjson" in reject["detail"] and "FIFO" in reject["detail"]
    assert status(daemon)["receivers"]["spool"]["set_aside"] == 1
    assert daemon.stop(timeout=15) == 0


def test_devices_sockets_and_directories_in_the_spool_are_not_files(daemon: Daemon) -> None:
    """Item 2: a character device (`/dev/zero`'s numbers), a Unix socket and a directory named like spool
    files are counted `not_a_file`, never opened for reading, and removed."""
    spool = Path(daemon.spool)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(spool / "sock.1.1.ndjson"))
    (spool / "dir.1.1.ndjson").mkdir()
    entries = 2
    try:
        os.mknod(spool / "zero.1.1.ndjson", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        entries += 1
    except PermissionError:
        pass  # no CAP_MKNOD here: the socket and the directory still stand for "not a regular file"
    try:
        daemon.start()
        wait_for(lambda: malformed(daemon).get("not_a_file") == entries, message="each counted not_a_file")
        spool_file(daemon, "app.3.3.ndjson", line(3))
        wait_records(daemon, 1, name="spool-3")
        assert malformed(daemon).get("not_a_file") == entries  # each counted once
        assert not os.path.lexists(spool / "sock.1.1.ndjson") and not (spool / "dir.1.1.ndjson").exists()
        assert not os.path.lexists(spool / "zero.1.1.ndjson")
        assert daemon.stop() == 0
    finally:
        listener.close()


def test_symlinks_in_the_spool_are_never_followed(daemon: Daemon, tmp_path: Path) -> None:
    """Item 2: a symlink to a root-only NDJSON file and one to a shadow-like file are counted `symlink` and
    removed; neither target is shipped nor copied into the rejects file, and both targets are untouched."""
    private = tmp_path / "private.ndjson"
    private.write_bytes(line(10) + line(11))
    private.chmod(0o600)
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$hunter2saltsalt$hashhashhash:19000:0:99999:7:::\n")
    shadow.chmod(0o600)
    spool = Path(daemon.spool)
    (spool / "evil.1.1.ndjson").symlink_to(private)
    (spool / "shadow.1.1.ndjson").symlink_to(shadow)
    daemon.start()
    wait_for(lambda: malformed(daemon).get("symlink") == 2, message="both symlinks counted")
    spool_file(daemon, "app.4.4.ndjson", line(4))
    wait_records(daemon, 1, name="spool-4")
    assert [r["name"] for r in daemon.records()] == ["spool-4"]
    assert not os.path.lexists(spool / "evil.1.1.ndjson") and not os.path.lexists(spool / "shadow.1.1.ndjson")
    assert private.read_bytes() == line(10) + line(11) and shadow.exists()
    text = (daemon.state / "rejected" / "rejected.ndjson").read_text()
    assert "hunter2" not in text and "spool-10" not in text
    assert daemon.stop() == 0


def test_hard_links_and_foreign_owners_are_set_aside(daemon: Daemon, tmp_path: Path) -> None:
    """Item 2: a hard link to another file (st_nlink > 1) is counted `hard_link`; with `allowed_uids`, a
    file owned by another uid is `foreign_owner`; both are moved to `.set-aside/`, never read."""
    private = tmp_path / "private.ndjson"
    private.write_bytes(line(20))
    private.chmod(0o600)
    spool = Path(daemon.spool)
    os.link(private, spool / "linked.1.1.ndjson")
    foreign = spool_file(daemon, "foreign.1.1.ndjson", line(21))
    os.chown(foreign, 4242, 4242)
    mine = spool_file(daemon, "mine.1.1.ndjson", line(22))
    os.chown(mine, 4343, 4343)
    config = daemon.default_config()
    config["receivers"]["spool"]["allowed_uids"] = [4343]
    daemon.set_config(**config).start()
    wait_for(lambda: malformed(daemon).get("hard_link") == 1 and malformed(daemon).get("foreign_owner") == 1,
             message="the hard link and the foreign file counted")
    wait_records(daemon, 1, name="spool-22")
    assert [r["name"] for r in daemon.records()] == ["spool-22"]
    aside = spool / ".set-aside"
    assert sorted(p.name.rsplit(".", 1)[0] for p in aside.iterdir()) == ["foreign.1.1.ndjson", "linked.1.1.ndjson"]
    assert private.read_bytes() == line(20)
    assert daemon.stop() == 0


def test_the_owner_of_a_spool_file_is_its_records_peer(daemon: Daemon) -> None:
    """Item 2: records read from a spool file carry the file owner's uid as `process.real_user.id`,
    whatever the record itself claims, like the socket's SO_PEERCRED."""
    path = spool_file(daemon, "app.5.5.ndjson", line(5, resource={"process.real_user.id": 0, "host.name": "h"}) + line(6))
    os.chown(path, 4444, 4444)
    daemon.start()
    got = wait_records(daemon, 2)
    assert {r["name"]: r["resource"]["process.real_user.id"] for r in got} == {"spool-5": 4444, "spool-6": 4444}
    assert next(r for r in got if r["name"] == "spool-5")["resource"]["host.name"] == "h"
    assert daemon.stop() == 0


def test_long_lines_are_too_large_and_blank_lines_are_counted(daemon: Daemon) -> None:
    """Item 13: a line over `max_read_bytes` but within `max_record_bytes` is read whole; one over
    `max_record_bytes` is counted `too_large` (not `torn_line`) and the lines around it are delivered;
    blank lines are counted `blank_lines`; a real torn tail is still `torn_line`."""
    config = daemon.default_config()
    config["receivers"]["spool"]["max_read_bytes"] = 4096
    config["max_record_bytes"] = 8192
    daemon.set_config(**config)
    long = orjson.dumps(make_span(trace=7, span=7, name="long", input="y" * 6000)) + b"\n"
    too_long = orjson.dumps(make_span(trace=8, span=8, name="too-long", input="x" * 20_000)) + b"\n"
    spool_file(daemon, "app.6.6.ndjson", line(30) + b"\n" + long + too_long + b"   \n" + line(31) + b'{"torn')
    daemon.start()
    wait_records(daemon, 3)
    wait_for(lambda: malformed(daemon).get("torn_line") == 1, message="the torn tail counted")
    assert malformed(daemon) == {"too_large": 1, "torn_line": 1}
    assert status(daemon)["receivers"]["spool"]["blank_lines"] == 2
    assert sorted(r["name"] for r in daemon.records()) == ["long", "spool-30", "spool-31"]
    assert daemon.stop() == 0
