"""systemd integration: the unit files, sd_notify from a real daemon, socket activation."""

from __future__ import annotations

import grp
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from support import Daemon, wait_for

from shipper import systemd
from shipper.config import parse_config
from shipper.testing import send_seqpacket, short_dir

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
REPO_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def record(i: int = 1) -> bytes:
    return orjson.dumps({"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "name": f"span-{i}",
                         "start_ns": 1, "end_ns": 2})


class NotifySocket:
    """A SOCK_DGRAM socket under /tmp standing in for systemd's notify socket; keeps every message."""

    def __init__(self) -> None:
        self.dir = short_dir("ntf")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait(self, key: str, after: int = 0, timeout: float = 15.0) -> int:
        """Index of the first message at or after `after` that carries `key`."""
        def found() -> int | None:
            for i, message in enumerate(self.poll()[after:], after):
                if key in message:
                    return i + 1  # truthy even for index 0
            return None
        return wait_for(found, timeout, message=f"{key} on the notify socket") - 1

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    ns = NotifySocket()
    yield ns
    ns.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify() -> None:
    """shipper.service and shipper.socket pass `systemd-analyze verify` without a warning."""
    work = tempfile.mkdtemp(prefix="units", dir="/tmp")
    try:
        # verify checks that ExecStart= is executable: point it at this interpreter instead of /opt/shipper.
        service = (UNITS / "shipper.service").read_text()
        assert "ExecStart=/opt/shipper/bin/shipper run -c /etc/shipper/shipper.yaml" in service
        Path(work, "shipper.service").write_text(
            service.replace("/opt/shipper/bin/shipper", f"{sys.executable} -m shipper"))
        shutil.copy(UNITS / "shipper.socket", work)
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", f"{work}/shipper.service",
                               f"{work}/shipper.socket"], capture_output=True, text=True, timeout=60)
        ours = [line for line in (done.stdout + done.stderr).splitlines() if "shipper" in line]
        assert done.returncode == 0 and not ours, done.stdout + done.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_service_unit_carries_the_hardening() -> None:
    """The service is Type=notify with a watchdog, reload by SIGHUP and the promised hardening."""
    text = (UNITS / "shipper.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "Restart=on-failure",
                 "RuntimeDirectory=shipper", "StateDirectory=shipper", "User=shipper", "ProtectSystem=strict",
                 "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service",
                 "MemoryMax=", "ReadWritePaths=-/var/spool/shipper"):
        assert f"\n{line}" in text, line
    socket_unit = (UNITS / "shipper.socket").read_text()
    for line in ("ListenSequentialPacket=/run/shipper/shipper.sock", "SocketMode=0660", "SocketGroup=shipper"):
        assert f"\n{line}" in socket_unit, line


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-tmpfiles") is None
                    or shutil.which("systemd-sysusers") is None,
                    reason="needs root and systemd-sysusers/systemd-tmpfiles")
def test_sysusers_and_tmpfiles_make_the_user_and_spool_directory() -> None:
    """In a scratch root, sysusers.d makes the shipper user; tmpfiles.d makes the spool 3770 shipper:shipper."""
    root = tempfile.mkdtemp(prefix="root", dir="/tmp")
    try:
        os.makedirs(f"{root}/etc")
        subprocess.run(["systemd-sysusers", f"--root={root}", str(UNITS / "sysusers.d/shipper.conf")],
                       check=True, capture_output=True, timeout=60)
        users = {line.split(":")[0]: line.split(":") for line in Path(root, "etc/passwd").read_text().splitlines()}
        assert "shipper" in users
        uid, gid = int(users["shipper"][2]), int(users["shipper"][3])
        subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(UNITS / "tmpfiles.d/shipper.conf")],
                       check=True, capture_output=True, timeout=60)
        st = os.stat(f"{root}/var/spool/shipper")
        assert stat.S_IMODE(st.st_mode) == 0o3770
        assert (st.st_uid, st.st_gid) == (uid, gid)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_daemon_notifies_ready_watchdog_reloading_ready_stopping(daemon_factory, notify_socket) -> None:
    """Under a NOTIFY_SOCKET with a watchdog: READY, WATCHDOG, RELOADING, READY, STOPPING, in that order."""
    daemon: Daemon = daemon_factory(env={**REPO_ENV, "NOTIFY_SOCKET": notify_socket.path,
                                         "WATCHDOG_USEC": "200000"})
    daemon.start()
    ready = notify_socket.wait("READY")
    assert "received 0" in notify_socket.messages[ready]["STATUS"]
    watchdog = notify_socket.wait("WATCHDOG", ready)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    reloading = notify_socket.wait("RELOADING", watchdog)
    usec = int(notify_socket.messages[reloading]["MONOTONIC_USEC"])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 60_000_000
    ready_again = notify_socket.wait("READY", reloading)
    send_seqpacket(daemon.socket, [record(1) + b"\n" + record(2)])
    wait_for(lambda: any("received 2" in m.get("STATUS", "") for m in notify_socket.poll()[ready_again:]),
             message="STATUS with the live count")
    assert daemon.stop() == 0
    stopping = notify_socket.wait("STOPPING", ready_again)
    assert ready < watchdog < reloading < ready_again < stopping


def test_notifier_reaches_an_abstract_socket() -> None:
    """A NOTIFY_SOCKET starting with @ is the abstract namespace."""
    name = f"shipper-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    try:
        notifier = systemd.Notifier.from_environ({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000",
                                                  "WATCHDOG_PID": str(os.getpid())})
        assert notifier is not None and notifier.watchdog_usec == 1_000_000
        assert notifier.notify("READY=1", "STATUS=ok")
        assert server.recv(100) == b"READY=1\nSTATUS=ok"
        notifier.close()
    finally:
        server.close()


def test_watchdog_of_another_pid_is_ignored() -> None:
    """WATCHDOG_PID naming another process leaves the watchdog off; no NOTIFY_SOCKET means no notifier."""
    notifier = systemd.Notifier.from_environ({"NOTIFY_SOCKET": "/tmp/nowhere", "WATCHDOG_USEC": "1000000",
                                              "WATCHDOG_PID": "1"})
    assert notifier is not None and notifier.watchdog_usec == 0
    notifier.close()
    assert systemd.Notifier.from_environ({}) is None


class _Receiver:
    def __init__(self, path: str) -> None:
        self.config = type("C", (), {"path": path})()

    def adopt(self, sock: socket.socket) -> None:
        raise AssertionError("not called by match_sockets")


def test_inherited_sockets_match_by_path_then_name_then_first_free() -> None:
    """An inherited socket goes to the receiver with its path, else the one with its name, else the first free."""
    work = short_dir("act")
    socks = []
    try:
        for name in ("a", "b", "c"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.bind(os.path.join(work, f"{name}.sock"))
            socks.append(s)
        receivers = {"first": _Receiver(os.path.join(work, "elsewhere.sock")),
                     "named": _Receiver(os.path.join(work, "other.sock")),
                     "by_path": _Receiver(os.path.join(work, "a.sock"))}
        pairs = systemd.match_sockets(receivers, [(socks[2], "unknown"), (socks[1], "named"),
                                                  (socks[0], "zzz")])
        assert {name: s.getsockname() for name, s in pairs} == {
            "by_path": os.path.join(work, "a.sock"), "named": os.path.join(work, "b.sock"),
            "first": os.path.join(work, "c.sock")}
    finally:
        for s in socks:
            s.close()
        shutil.rmtree(work, ignore_errors=True)


def test_socket_activation_takes_the_inherited_socket(daemon_factory) -> None:
    """LISTEN_FDS/LISTEN_PID: the daemon listens on the socket it was given, spans arrive, the file stays."""
    daemon: Daemon = daemon_factory(env=REPO_ENV).start_socket_activated()
    assert "inherited from systemd" in daemon.log()
    assert "Removed the stale socket" not in daemon.log()
    send_seqpacket(daemon.socket, [record(i) + b"\n" for i in range(1, 6)])
    wait_for(lambda: len(daemon.records()) == 5, message="the five spans in the output")
    assert daemon.status()["receivers"]["socket"]["inherited"] is True
    assert daemon.stop() == 0
    assert stat.S_ISSOCK(os.lstat(daemon.socket).st_mode), "an inherited socket file belongs to systemd"


def test_socket_activation_for_another_pid_is_ignored(daemon_factory) -> None:
    """LISTEN_PID naming another process: the daemon binds its own socket."""
    daemon: Daemon = daemon_factory(env={**REPO_ENV, "LISTEN_PID": "1", "LISTEN_FDS": "1"})
    daemon.start()
    assert "inherited from systemd" not in daemon.log()
    send_seqpacket(daemon.socket, [record(7)])
    wait_for(lambda: len(daemon.records()) == 1, message="the span in the output")
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.socket)


def test_status_line_names_counts_and_drops() -> None:
    """STATUS= sums exported, queued and drops by reason from `Pipeline.status()`."""
    line = systemd.status_line({
        "pipeline": {"received": 10},
        "exporters": {"a": {"exported": 4, "queue_items": 3}, "b": {"exported": 5}},
        "dropped": {"queue_full": 2, "sampled": 1},
    })
    assert line == "received 10, exported 9, queued 3, dropped 3 (queue_full 2, sampled 1)"



def test_service_config_matches_the_units() -> None:
    """systemd/shipper.yaml is valid and uses the socket path of shipper.socket and the tmpfiles spool."""
    text = (UNITS / "shipper.yaml").read_text()
    try:
        grp.getgrnam("shipper")
    except KeyError:  # no shipper group on this machine: the group check would fail for that reason only
        text = text.replace("group: shipper ", 'group: "" ')
    config = parse_config(text, "shipper.yaml")
    by_type = {spec.type: spec.config for spec in config.receivers}
    listen = re.search(r"^ListenSequentialPacket=(\S+)$", (UNITS / "shipper.socket").read_text(), re.M)
    assert listen and by_type["unix_socket"].path == listen.group(1)
    spool = re.search(r"^d\s+(\S+)\s+3770\s+shipper\s+shipper", (UNITS / "tmpfiles.d/shipper.conf").read_text(),
                      re.M)
    assert spool and by_type["spool"].dir == spool.group(1)
    assert config.settings.metrics.endpoint == "127.0.0.1:9464"
