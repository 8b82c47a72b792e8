"""The processes a benchmark runs beside the measured app: the daemon, the OTLP sink, a receiver that never reads."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from benchmarks.machine import ROOT
from shipper.testing import wait_until

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

# The measured app gets a CPU of its own, the daemon and the sink the others: unpinned, a process on this
# (virtual, 2-CPU) machine ran the same loop at 1x or 2x the time from one run to the next.
_CPUS = sorted(os.sched_getaffinity(0))
APP_CPUS = set(_CPUS[-1:])
SERVICE_CPUS = set(_CPUS[:-1]) or APP_CPUS


def pin(pid: int, cpus: set[int]) -> None:
    """Keep a process (pid 0: this one) on `cpus`; where that is not allowed, leave it be."""
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        pass


def pin_app() -> None:
    """`preexec_fn` of a measured app: run on the app's CPU."""
    pin(0, APP_CPUS)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; raise TimeoutError after `timeout` seconds."""
    return wait_until(condition, timeout, interval, what)


def short_dir(prefix: str = "shb") -> Path:
    """A fresh directory under /tmp, short enough for Unix socket paths."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (for a backend that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    """Send `sig` to a process still running, wait up to `grace` seconds, then kill it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Sink:
    """`python -m benchmarks.sink` in its own process."""

    def __init__(self, port: int = 0, cpus: set[int] = SERVICE_CPUS) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sink", "--port", str(port)],
                                     stdout=subprocess.PIPE, env=ENV, cwd=ROOT)
        pin(self.proc.pid, cpus)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"the OTLP sink did not start (it said {line!r})")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            return orjson.loads(answer.read())

    def stats(self) -> dict[str, int]:
        return self._get("/stats")

    def spans(self) -> int:
        return self.stats()["spans"]

    def latencies(self) -> list[int]:
        return self._get("/latencies")

    def reset(self) -> None:
        self._get("/reset")

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, 10)


class Daemon:
    """`python -m shipper run -c CONFIG` with its socket, spool and state in a directory of its own."""

    def __init__(self, exporters: dict[str, Any], extra: dict[str, Any] | None = None,
                 receivers: dict[str, Any] | None = None, pinned: bool = True) -> None:
        self.pinned = pinned
        self.root = short_dir("shd")
        self.socket = str(self.root / "s.sock")
        self.spool = str(self.root / "spool")
        self.state = self.root / "state"
        self.config = {
            "state_dir": str(self.state),
            "log_level": "warning",
            "receivers": {"socket": {"type": "unix_socket", "path": self.socket},
                          "spool": {"type": "spool", "dir": self.spool}, **(receivers or {})},
            "exporters": exporters,
            **(extra or {}),
        }
        self.config_path = self.root / "shipper.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = self.root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "shipper", "run", "-c", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=self.root)
        if self.pinned:
            pin(self.proc.pid, SERVICE_CPUS)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.status()
            except Exception:
                return False
            return os.path.exists(self.socket)

        wait_for(ready, 30, "the daemon answering on its control socket")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        from shipper.control import request

        return request(str(self.root / "s.control.sock"), "status")["status"]  # named after s.sock

    def received(self) -> int:
        """Records the pipeline took in so far, from the socket and the spool."""
        return int(self.status()["pipeline"].get("received", 0))

    def exported(self, name: str) -> int:
        return int(self.status()["exporters"][name].get("exported", 0))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 30)
        shutil.rmtree(self.root, ignore_errors=True)


class DeafReceiver:
    """A SOCK_SEQPACKET listener that accepts senders and never reads, until `drain()` counts what is queued."""

    def __init__(self) -> None:
        self.root = short_dir("shf")
        self.socket = str(self.root / "s.sock")
        self.spool = str(self.root / "spool")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind(self.socket)
        self._listener.listen(16)
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
                conn.send(b"+")  # the daemon's verdict: accepted (it just never reads)
            except OSError:
                return
            self._connections.append(conn)

    def drain(self) -> int:
        """Read every queued message of every connection; the number of records (lines) they held."""
        records = 0
        for conn in self._connections:
            conn.setblocking(False)
            while True:
                try:
                    data = conn.recv(8 * 1024 * 1024)
                except BlockingIOError:
                    break
                if not data:
                    break
                records += data.count(b"\n")
        return records

    def close(self) -> None:
        self._listener.close()
        for conn in self._connections:
            conn.close()
        shutil.rmtree(self.root, ignore_errors=True)


def spool_lines(directory: str) -> int:
    """Complete lines in the NDJSON files of a spool directory."""
    path = Path(directory)
    return sum(f.read_bytes().count(b"\n") for f in path.glob("*.ndjson")) if path.exists() else 0
