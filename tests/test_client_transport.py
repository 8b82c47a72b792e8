"""The shim's transport: socket, spool, counted drops, reconnect pacing, fork; it never raises or blocks."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Iterator

import pytest

import shipper
from shipper.client import transport
from shipper.client.testing import RecordingServer, capture, read_spool

BIG = "x" * 8192  # a record of about 8 KiB fills the socket buffer in a few hundred sends


def spool_dir(server: RecordingServer) -> str:
    return os.path.join(server.dir, "spool")


def spool_files(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def is_locked(path: str) -> bool:
    """True if another open file description holds flock on `path` (as the daemon would test it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class FakeClock:
    """Stands in for time.monotonic in the transport, so the one-second pacing is tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A clock the test moves by hand."""
    fake = FakeClock()
    monkeypatch.setattr(transport, "monotonic", fake)
    return fake


@pytest.fixture
def no_daemon() -> Iterator[RecordingServer]:
    """The shim pointed at a socket path nobody listens on."""
    with capture() as server:
        os.unlink(server.path)
        yield server


def test_records_go_to_the_socket_when_the_daemon_reads(clock: FakeClock) -> None:
    """With a reading daemon every record is sent, none spooled, one connect in all."""
    with capture() as server:
        for i in range(50):
            with shipper.span(f"s{i}"):
                pass
        server.wait_for(50)
        stats = shipper.statistics()
    assert stats["sent"] == 50 and stats["spooled"] == 0 and stats["dropped"] == {}
    assert stats["socket_connected"] and stats["connect_attempts"] == 1


def test_a_daemon_that_never_reads_gets_records_until_eagain_then_the_spool_takes_them() -> None:
    """Against a listener that never accepts, sends go on until EAGAIN (or the cap of unconfirmed copies),
    the rest is spooled (`socket_full` at once: emit never waits), and nothing is lost: what went on the
    socket is counted `sent` only once the daemon accepts (its verdict), and then it is exactly what the
    socket held."""
    with capture(accept=False) as server:
        emitted = 0
        deadline = time.monotonic() + 20
        while shipper.statistics()["spooled"] < 50:
            assert time.monotonic() < deadline, "the socket never filled up"
            with shipper.span("big") as s:
                s.log(input=BIG)
            emitted += 1
        stats = shipper.statistics()
        assert stats["sent"] == 0, "counted sent before the daemon accepted"
        assert stats["unconfirmed"] > 0, "nothing reached the socket before it filled"
        assert stats["unconfirmed"] + stats["spooled"] == emitted and stats["dropped"] == {}
        assert set(stats["spooled_by_reason"]) <= {"socket_full", "socket_unconfirmed"}
        assert len(read_spool(spool_dir(server))) == stats["spooled"]
        assert server.drain() == stats["unconfirmed"]
        after = shipper.statistics()
        assert after["sent"] == stats["unconfirmed"] and after["unconfirmed"] == 0


def test_without_a_daemon_records_are_spooled(no_daemon: RecordingServer) -> None:
    """No socket to connect to: every record lands in this process's spool file, in order."""
    for i in range(5):
        with shipper.span(f"s{i}"):
            pass
    stats = shipper.statistics()
    assert stats["sent"] == 0 and stats["spooled"] == 5 and not stats["socket_connected"]
    assert stats["spooled_by_reason"] == {"socket_unavailable": 5}
    assert "cannot connect" in stats["socket_error"]
    assert [r["name"] for r in read_spool(spool_dir(no_daemon))] == [f"s{i}" for i in range(5)]


def test_spool_file_is_named_locked_and_private(no_daemon: RecordingServer) -> None:
    """The spool file is <service>.<pid>.<ms>.ndjson, mode 0640, locked while open, with no temp left."""
    with shipper.span("s"):
        pass
    directory = spool_dir(no_daemon)
    (name,) = os.listdir(directory)
    assert re.fullmatch(rf"test\.{os.getpid()}\.\d{{13}}\.ndjson", name)
    path = os.path.join(directory, name)
    assert shipper.statistics()["spool_file"] == path
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o137 == 0  # at most 0640 (the umask may take more)
    assert is_locked(path)
    transport.shutdown()
    assert not is_locked(path), "closing the spool file must release its lock"


def test_spool_file_name_is_sanitized() -> None:
    """A service name with unsafe characters or a leading dot still makes a readable file name."""
    with capture(service="../my app/.x", mode="spool") as server:
        with shipper.span("s"):
            pass
        (name,) = spool_files(spool_dir(server))
    assert name.startswith("_my_app_.x.")


def test_reconnect_is_tried_at_most_once_a_second(no_daemon: RecordingServer, clock: FakeClock) -> None:
    """While the daemon is down a burst of spans makes one connect attempt; the next comes a second later,
    and once the daemon is back records go to the socket again."""
    for _ in range(200):
        with shipper.span("s"):
            pass
    assert shipper.statistics()["connect_attempts"] == 1
    clock.now += 0.5
    with shipper.span("s"):
        pass
    assert shipper.statistics()["connect_attempts"] == 1
    with RecordingServer(path=no_daemon.path) as daemon:
        clock.now += 0.6
        with shipper.span("back"):
            pass
        assert daemon.wait_for(1)[0]["name"] == "back"
        stats = shipper.statistics()
    assert stats["connect_attempts"] == 2 and stats["sent"] == 1 and stats["spooled"] == 201


def test_a_restarting_daemon_sends_records_to_the_spool(clock: FakeClock) -> None:
    """When the daemon goes away mid-connection (EPIPE / ECONNRESET) the record is spooled, not lost."""
    with capture() as server:
        with shipper.span("first"):
            pass
        server.wait_for(1)
        server.close()
        for _ in range(3):
            with shipper.span("while down"):
                pass
        stats = shipper.statistics()
        assert stats["sent"] == 1 and stats["spooled"] == 3 and not stats["socket_connected"]
        assert [r["name"] for r in read_spool(spool_dir(server))] == ["while down"] * 3


def test_a_record_above_the_message_cap_is_spooled() -> None:
    """A record larger than max_message_bytes skips the socket and goes to the spool whole."""
    with capture(max_message_bytes=4096) as server:
        with shipper.span("large") as s:
            s.log(input=BIG)
        with shipper.span("small"):
            pass
        server.wait_for(1)
        stats = shipper.statistics()
        assert stats["sent"] == 1 and stats["spooled_by_reason"] == {"too_large": 1}
        assert read_spool(spool_dir(server))[0]["input"] == BIG


def test_mode_socket_drops_instead_of_spooling(no_daemon: RecordingServer) -> None:
    """In mode socket a record the socket cannot take is dropped and counted, and no spool file appears."""
    shipper.configure(service="test", socket=no_daemon.path, spool_dir=spool_dir(no_daemon), mode="socket")
    for _ in range(3):
        with shipper.span("s"):
            pass
    stats = shipper.statistics()
    assert stats["dropped"] == {"socket_unavailable": 3} and stats["spooled"] == 0
    assert not os.path.exists(spool_dir(no_daemon))


def test_mode_spool_never_touches_the_socket() -> None:
    """In mode spool every record is appended to the spool, even with a daemon listening."""
    with capture(mode="spool") as server:
        with shipper.span("s"):
            pass
        stats = shipper.statistics()
        assert stats["spooled"] == 1 and stats["connect_attempts"] == 0
        assert len(read_spool(spool_dir(server))) == 1


def test_an_unwritable_spool_drops_and_counts_without_raising() -> None:
    """No daemon and a spool that cannot exist (under /dev/null, which stops root too): counted drops."""
    with capture(spool_dir="/dev/null/spool") as server:
        os.unlink(server.path)
        for _ in range(3):
            with shipper.span("s"):
                pass
        transport.emit_record({"trace_id": "1" * 32})
        stats = shipper.statistics()
    assert stats["dropped"] == {"spool_error": 4} and stats["spooled"] == 0
    assert stats["spool_error"] and "/dev/null/spool" in stats["spool_error"]


def test_spool_rotates_past_its_size_cap(no_daemon: RecordingServer) -> None:
    """Past spool_max_bytes a new file is opened (locked) and the old one closed (lock released)."""
    shipper.configure(service="test", socket=no_daemon.path, spool_dir=spool_dir(no_daemon),
                      spool_max_bytes=4096)
    for i in range(12):
        with shipper.span(f"s{i}") as s:
            s.log(input="y" * 1000)
    directory = spool_dir(no_daemon)
    names = spool_files(directory)
    assert len(names) >= 3
    current = shipper.statistics()["spool_file"]
    for name in names:
        path = os.path.join(directory, name)
        assert is_locked(path) == (path == current)
        assert os.path.getsize(path) <= 4096 or path == current
    assert [r["name"] for r in read_spool(directory)] == [f"s{i}" for i in range(12)]


def test_forked_child_uses_its_own_pid_and_spool_file(no_daemon: RecordingServer) -> None:
    """A forked child's spans carry its pid and go to a spool file of its own; the parent's file stays
    locked, because the child closed its inherited descriptor without unlocking."""
    with shipper.span("parent before fork"):
        pass
    parent_file = shipper.statistics()["spool_file"]
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            fresh = shipper.statistics()
            with shipper.span("child"):
                pass
            stats = shipper.statistics()
            ok = fresh["spooled"] == 0 and fresh["spool_file"] is None and stats["spooled"] == 1
            code = 0 if ok and stats["spool_file"] != parent_file else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with shipper.span("parent after fork"):
        pass
    assert shipper.statistics()["spool_file"] == parent_file and is_locked(parent_file)
    records = read_spool(spool_dir(no_daemon))
    by_name = {r["name"]: r for r in records}
    assert by_name["child"]["resource"]["process.pid"] == pid
    assert by_name["parent after fork"]["resource"]["process.pid"] == os.getpid()
    child_files = [n for n in spool_files(spool_dir(no_daemon)) if f".{pid}." in n]
    assert len(child_files) == 1


def test_disabled_builds_nothing_for_the_daemon() -> None:
    """With disabled=True spans still nest but nothing is sent or spooled; each is counted as disabled."""
    with capture(disabled=True) as server:
        with shipper.span("outer") as outer, shipper.span("inner"):
            assert shipper.current_span().trace_id == outer.trace_id
        stats = shipper.statistics()
        assert stats["sent"] == 0 and stats["dropped"] == {"disabled": 2}
        assert server.records == []


def test_emit_record_sends_a_prebuilt_record_unchanged() -> None:
    """emit_record() sends a record built elsewhere (an OTel exporter, a callback) through the transport."""
    record = {"trace_id": "a" * 32, "span_id": "b" * 16, "name": "external", "start_ns": 1, "end_ns": 2}
    with capture() as server:
        transport.emit_record(record)
        assert server.wait_for(1) == [record]


def test_emit_never_raises_on_a_broken_record() -> None:
    """A value whose repr raises, and a cycle, still produce a record instead of an exception."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    loop: dict[str, object] = {}
    loop["self"] = loop
    with capture() as server:
        with shipper.span("odd") as s:
            s.log(input=Broken(), output=loop)
        (record,) = server.wait_for(1)
    assert record["input"].startswith("<unrepresentable ") and record["input"].endswith("Broken>")
    assert record["output"] == {"self": "<cycle: dict>"}


def test_statistics_reports_paths_and_mode(no_daemon: RecordingServer) -> None:
    """statistics() names the socket path, the spool directory and the mode, before any span."""
    stats = shipper.statistics()
    assert stats["socket_path"] == no_daemon.path and stats["spool_dir"] == spool_dir(no_daemon)
    assert stats["mode"] == "auto" and stats["spool_file"] is None and stats["sent"] == 0


def test_connect_failure_errno_is_reported(no_daemon: RecordingServer) -> None:
    """The last connect error is visible, with its path, for an operator to act on."""
    with shipper.span("s"):
        pass
    assert os.strerror(errno.ENOENT) in shipper.statistics()["socket_error"]


def test_threads_racing_to_connect_all_use_the_socket() -> None:
    """Spans ending at once in many threads before the first connect all reach the socket, none the spool."""
    import threading

    with capture() as server:
        barrier = threading.Barrier(8)

        def one() -> None:
            barrier.wait()
            with shipper.span("racer"):
                pass

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        server.wait_for(8)
        stats = shipper.statistics()
    assert stats["sent"] == 8 and stats["spooled"] == 0 and stats["connect_attempts"] == 1


def test_a_full_socket_is_left_alone_a_moment_then_tried_again(clock: FakeClock, tmp_path) -> None:
    """After EAGAIN on an accepted connection, records go straight to the spool (`socket_full`) for
    FULL_PAUSE, even once the daemon has made room, and then to the socket again: nothing lost, nothing
    counted sent that the daemon did not take."""
    import socket as socketlib

    path = f"/tmp/shp-full-{os.getpid()}.sock"
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(4)
    try:
        shipper.configure(service="test", socket=path, spool_dir=str(tmp_path / "spool"))
        with shipper.span("first"):  # connects; the verdict is not there yet
            pass
        conn, _ = listener.accept()
        conn.send(b"+")  # accepted, and then never read until the test says so
        assert transport.active().confirm(1.0)
        sent_before_full = 0
        while shipper.statistics()["spooled"] == 0:
            with shipper.span("big") as s:
                s.log(input=BIG)
            sent_before_full += 1
            assert sent_before_full < 100_000, "the socket never filled up"
        received = 0
        conn.setblocking(False)
        while True:  # the daemon catches up: the buffer is empty again
            try:
                conn.recv(1 << 20)
            except BlockingIOError:
                break
            received += 1
        for _ in range(5):
            with shipper.span("paused"):
                pass
        stats = shipper.statistics()
        assert stats["spooled_by_reason"] == {"socket_full": 6}, "the socket was tried during the pause"
        clock.now += transport.FULL_PAUSE
        with shipper.span("after"):
            pass
        assert conn.recv(1 << 20).startswith(b"{") and shipper.statistics()["sent"] == received + 1
        assert len(read_spool(str(tmp_path / "spool"))) == 6
    finally:
        transport.shutdown()
        listener.close()
        os.unlink(path)
