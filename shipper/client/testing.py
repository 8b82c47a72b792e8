"""Real parts for testing code that emits spans: a daemon stand-in socket and a capture block.

    from shipper.client.testing import capture

    with capture() as server:
        my_traced_function()
        records = server.wait_for(1)

`RecordingServer` is a real AF_UNIX SOCK_SEQPACKET listener (under /tmp: socket paths must stay short)
that keeps every record it receives; with `accept=False` it listens but never accepts or reads, like a
wedged daemon. Standard library only; nothing here is imported by `import shipper`.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import transport
from .transport import configure

__all__ = ["RecordingServer", "capture", "read_spool"]

_MAX_MESSAGE = 16 * 1024 * 1024


class RecordingServer:
    """A listening SOCK_SEQPACKET socket that collects the records sent to it."""

    def __init__(self, path: str | None = None, accept: bool = True) -> None:
        self.dir = tempfile.mkdtemp(prefix="shp", dir="/tmp")
        self.path = path or os.path.join(self.dir, "daemon.sock")
        self.accept = accept
        self.records: list[dict[str, Any]] = []
        self.messages = 0
        self._changed = threading.Condition()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._buffer = bytearray(_MAX_MESSAGE)

    def start(self) -> RecordingServer:
        """Bind and listen; with `accept`, read in a background thread."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.path)
        listener.listen(64)
        self._listener = listener
        if self.accept:
            self._thread = threading.Thread(target=self._serve, name="RecordingServer", daemon=True)
            self._thread.start()
        return self

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The records, once there are at least `count` of them; AssertionError after `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.records) >= count, timeout):
                raise AssertionError(f"waited {timeout}s for {count} records, got {len(self.records)}")
            return list(self.records)

    def drain(self) -> int:
        """Accept every pending connection and read what it holds, now (for `accept=False`); the count."""
        assert self._listener is not None
        self._listener.setblocking(False)
        read = 0
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return read
            with conn:
                conn.setblocking(False)
                conn.send(transport.ACCEPTED)
                while True:
                    try:
                        n = conn.recv_into(self._buffer)
                    except BlockingIOError:
                        break
                    if n == 0:
                        break
                    self._keep(bytes(self._buffer[:n]))
                    read += 1

    def close(self) -> None:
        """Stop reading, close the socket, remove its directory. Idempotent."""
        if self._wake_w.fileno() >= 0:
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._wake_r.close()
        self._wake_w.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _keep(self, message: bytes) -> None:
        lines = [json.loads(line) for line in message.split(b"\n") if line.strip()]
        with self._changed:
            self.messages += 1
            self.records.extend(lines)
            self._changed.notify_all()

    def _serve(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ, "accept")
            selector.register(self._wake_r, selectors.EVENT_READ, "stop")
            while True:
                for key, _ in selector.select():
                    if key.data == "stop":
                        for reader in [k.fileobj for k in selector.get_map().values() if k.data == "read"]:
                            reader.close()  # type: ignore[union-attr]
                        return
                    if key.data == "accept":
                        conn, _ = self._listener.accept()
                        conn.send(transport.ACCEPTED)  # the verdict a daemon sends to a sender it takes
                        selector.register(conn, selectors.EVENT_READ, "read")
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    try:
                        n = conn.recv_into(self._buffer)
                    except OSError:
                        n = 0
                    if n == 0:
                        selector.unregister(conn)
                        conn.close()
                    else:
                        self._keep(bytes(self._buffer[:n]))


def read_spool(directory: str) -> list[dict[str, Any]]:
    """Every complete line of the spool files in `directory`, file by file (dot-names skipped)."""
    records: list[dict[str, Any]] = []
    if not os.path.isdir(directory):
        return records
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or not name.endswith(".ndjson"):
            continue
        with open(os.path.join(directory, name), "rb") as file:
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        records.extend(json.loads(line) for line in complete.splitlines() if line.strip())
    return records


@contextmanager
def capture(accept: bool = True, **settings: Any) -> Iterator[RecordingServer]:
    """Point the shim at a fresh `RecordingServer` and spool directory (`server.dir`/spool) for the block.

    `settings` go to configure() (service defaults to "test"); afterwards the transport is shut down, so
    the next span starts again from the environment.
    """
    server = RecordingServer(accept=accept).start()
    try:
        configure(**{"service": "test", "socket": server.path,
                     "spool_dir": os.path.join(server.dir, "spool"), **settings})
        yield server
    finally:
        transport.shutdown()
        server.close()
