"""Receiver `unix_socket`: NDJSON messages on an AF_UNIX SOCK_SEQPACKET socket (docs/transports.md).

Each connection is one sending process; the kernel keeps message boundaries and tells us the sender's
pid/uid/gid (`SO_PEERCRED`), which is attached to its records as resource `process.pid` and
`process.real_user.id`. A connection is drained until `EAGAIN` and what arrived is delivered as one
intake, so a busy sender costs one pipeline hand-off per wake-up, not per span. A drain stops as soon
as the pipeline's intake budget (settings `intake`, shipper.intake) would be full, and no connection
reads while it is full: the kernel buffer, then the client's spool, hold what waits, so what this
receiver holds in memory is bounded whatever the shape of the messages.

- On accept the daemon sends a one-byte verdict message: `+` (accepted) or `-` (refused by
  `allowed_uids`/`allowed_gids`, then closed). The client counts a record `sent` only once it has read `+`,
  and spools what it sent before reading `-`, so nothing a refused sender wrote is lost.
- A zero-length message is counted `empty` and skipped. Only a real end of stream (the peer hung up, and
  nothing is left in the receive queue) ends a connection.
- On stop (`drain()`, SIGTERM) the socket file is removed (new senders spool), connections waiting in the
  backlog are accepted, every connection is shut down for reading (a later send fails with EPIPE and the
  client spools it) and what its kernel buffer already holds is read and delivered before it is closed.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import select
import socket
import stat
import struct
import termios
from dataclasses import dataclass, field
from typing import Any

import anyio

from shipper.client.paths import resolve_socket_path
from shipper.component import Context, Deliver, Intake
from shipper.errors import ConfigError
from shipper.record import Reject, decode_payload
from shipper.values import ByteSize

__all__ = ["UnixSocketReceiver"]

log = logging.getLogger("shipper.receivers.unix_socket")

_PEERCRED = struct.Struct("3i")
_DRAIN_MESSAGES = 256
_MSG_TRUNC = int(socket.MSG_TRUNC)  # recv returns the whole length of a message it cut; a plain int, no enum code
_HUNG_UP = select.POLLRDHUP | select.POLLHUP
_INQ = struct.Struct("i")
ACCEPTED = b"+"
REFUSED = b"-"
"""The verdict message sent on accept: the client reads it before it counts anything as sent."""


def _at_end(conn: socket.socket) -> bool:
    """After a zero-length read: True at a real end of stream (peer gone, receive queue empty)."""
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLRDHUP)
    events = poller.poll(0)
    if not events or not events[0][1] & _HUNG_UP:
        return False  # the peer is still there: that was a zero-length message
    try:
        queued = _INQ.unpack(fcntl.ioctl(conn, termios.FIONREAD, b"\0" * _INQ.size))[0]
    except OSError:
        return True
    return queued == 0  # bytes still queued after the hang-up: read them first


def _mode(value: Any) -> int:
    return value if isinstance(value, int) else int(str(value), 8)


@dataclass(kw_only=True)
class Config:
    """Where to listen and who may send."""

    path: str = field(default_factory=resolve_socket_path)
    mode: int | str = "0660"
    group: str = ""
    allowed_uids: list[int] = field(default_factory=list)
    allowed_gids: list[int] = field(default_factory=list)
    max_message_bytes: ByteSize = field(default=8 * 1024 * 1024, metadata={"min": 4096})
    backlog: int = field(default=128, metadata={"min": 1})

    def check(self) -> list[str]:
        problems = []
        try:
            if not 0 <= _mode(self.mode) <= 0o777:
                raise ValueError
        except ValueError:
            problems.append(f"mode: expected an octal file mode like \"0660\", got {self.mode!r}")
        if len(os.fsencode(self.path)) > 107:
            problems.append(f"path: a Unix socket path is limited to 107 bytes, got {len(self.path)}")
        if self.group:
            try:
                grp.getgrnam(self.group)
            except KeyError:
                if not self.group.isdigit():
                    problems.append(f"group: no group named {self.group!r} on this machine")
        return problems


def _refuse(conn: socket.socket) -> None:
    """Tell a refused sender so (it spools what it sent), stop its sends, discard what it queued, close.

    Reading the queue out before closing keeps the verdict readable: a socket closed with unread data
    resets the peer, and the reset would be all the client sees.
    """
    try:
        conn.send(REFUSED)
        conn.shutdown(socket.SHUT_RD)  # its later sends fail with EPIPE
        while conn.recv(1, socket.MSG_TRUNC):
            pass
    except OSError:
        pass
    conn.close()


class UnixSocketReceiver:
    """Listens on a SOCK_SEQPACKET socket; one task per connected sender."""

    Config = Config

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.counters = ctx.counters
        self._listener: socket.socket | None = None
        self._buffer = bytearray(config.max_message_bytes)
        self._view = memoryview(self._buffer)
        self._allowed = frozenset(config.allowed_uids)
        self._allowed_gids = frozenset(config.allowed_gids)
        self._restricted = bool(self._allowed or self._allowed_gids)
        self._connections = 0
        self._inherited = False
        self._open: set[socket.socket] = set()
        self._draining = False
        self._idle: anyio.Event | None = None
        self._spawn: Any = None

    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status`."""
        path = self._listener.getsockname() if self._inherited and self._listener else self.config.path
        return {"path": path, "open_connections": self._connections, "inherited": self._inherited}

    async def open(self) -> None:
        """Bind the socket (replacing a stale file), set its mode and group, and listen.

        With a socket handed over by `adopt()` (socket activation) nothing is bound: systemd owns the
        file, its mode and its group (`SocketMode=`, `SocketGroup=`).
        """
        if self._listener is not None and self._inherited:
            return
        path = self.config.path
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(path)
            os.chmod(path, _mode(self.config.mode))
            if self.config.group:
                group = self.config.group
                gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
                os.chown(path, -1, gid)
            sock.listen(self.config.backlog)
        except OSError as exc:
            sock.close()
            raise ConfigError([f"receivers.{self.ctx.name}.path: cannot listen on {path}: {exc.strerror}"]) from exc
        sock.setblocking(False)
        self._listener = sock
        log.info("Listening on %s (mode %o).", path, _mode(self.config.mode))

    def adopt(self, sock: socket.socket) -> None:
        """Use an already-bound listening socket (socket activation) instead of binding one."""
        sock.setblocking(False)
        self._listener = sock
        self._inherited = True

    @staticmethod
    def _remove_stale(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError([f"{path}: exists and is not a socket; remove it or choose another path"])
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EPROTOTYPE):
                raise ConfigError([f"{path}: cannot tell whether the socket is in use: {exc.strerror}"]) from exc
            os.unlink(path)
            log.info("Removed the stale socket %s.", path)
            return
        finally:
            probe.close()
        raise ConfigError([f"{path}: another shipper daemon is already listening there"])

    async def run(self, deliver: Deliver) -> None:
        """Accept senders until cancelled (or, after `drain()`, until the backlog is empty)."""
        assert self._listener is not None, "open() first"
        listener = self._listener
        async with anyio.create_task_group() as tg:
            self._spawn = lambda conn, pid, uid: tg.start_soon(self._serve, conn, pid, uid, deliver)
            while not self._draining:
                await anyio.wait_readable(listener)
                if not await self._accept_pending(listener):
                    await anyio.sleep(0.5)  # EMFILE and friends: said so, back off, keep going
            await anyio.sleep_forever()  # the drain is under way; the pipeline cancels us when it is done

    async def _accept_pending(self, listener: socket.socket) -> bool:
        """Accept every connection waiting in the backlog; False after an accept error (logged)."""
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                log.error("Cannot accept a connection on %s: %s.", self.config.path, exc.strerror)
                return False
            pid, uid, gid = _PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            conn.setblocking(False)
            if self._restricted and uid not in self._allowed and gid not in self._allowed_gids:
                self.counters.add("refused")
                log.warning("Refused a sender with uid %d gid %d (pid %d) on %s: neither is in "
                            "allowed_uids or allowed_gids.", uid, gid, pid, self.config.path)
                _refuse(conn)
                continue
            try:
                conn.send(ACCEPTED)
            except OSError:
                pass  # the sender is gone already; what it queued is still read below
            self.counters.add("connections")
            self._open.add(conn)
            self._connections += 1
            if self._draining:
                conn.shutdown(socket.SHUT_RD)
            self._spawn(conn, pid, uid)

    async def drain(self) -> None:
        """Stop accepting, read what every connection's kernel buffer holds, then let them close.

        Called once at shutdown, before the receiver's task is cancelled; returns when every connection has
        been read to its end (the pipeline bounds the wait by `shutdown_timeout`).
        """
        if self._draining or self._listener is None:
            return
        self._draining = True
        self._idle = anyio.Event()
        if not self._inherited:  # new senders get ENOENT and spool; systemd keeps an inherited socket's backlog
            try:
                os.unlink(self.config.path)
            except OSError:
                pass
            if self._spawn is not None:
                await self._accept_pending(self._listener)
        for conn in list(self._open):
            try:
                conn.shutdown(socket.SHUT_RD)  # the sender's next send fails (EPIPE): it spools instead
            except OSError:
                pass
        if self._connections:
            await self._idle.wait()
        log.info("Drained every connection on %s.", self.config.path)

    async def _serve(self, conn: socket.socket, pid: int, uid: int, deliver: Deliver) -> None:
        source = f"{self.ctx.name} pid={pid} uid={uid}"
        max_record = self.ctx.max_record_bytes
        counters = self.counters
        view = self._view
        capacity = len(view)
        recv_into = conn.recv_into
        budget = self.ctx.intake
        try:
            with conn:
                while True:
                    if budget is not None:
                        await budget.wait_room()
                    await anyio.wait_readable(conn)
                    records: list[dict[str, Any]] = []
                    rejects: list[Reject] = []
                    size = messages = empty = 0
                    closed = False
                    for _ in range(_DRAIN_MESSAGES):
                        if budget is not None and not budget.has_room(len(records) + len(rejects), size):
                            break  # the rest waits in the kernel buffer until the pipeline catches up
                        try:
                            n = recv_into(view, 0, _MSG_TRUNC)  # a message's whole length, even cut
                        except (BlockingIOError, InterruptedError):
                            break
                        except ConnectionResetError:
                            # the sender closed with our verdict unread: the error is reported once, what
                            # it queued before closing is still there to read
                            continue
                        except OSError:
                            closed = True
                            break
                        if n == 0:
                            if _at_end(conn):
                                closed = True
                                break
                            empty += 1
                            continue
                        messages += 1
                        if n > capacity:
                            rejects.append(Reject("too_large", f"message over {capacity} bytes", bytes(view[:1024])))
                            continue
                        size += n
                        got, bad = decode_payload(view[:n].tobytes(), max_record)
                        records += got
                        if bad:
                            rejects += bad
                    if records:
                        for rec in records:
                            resource = rec.get("resource")
                            if resource is None:
                                rec["resource"] = {"process.pid": pid, "process.real_user.id": uid}
                            else:
                                resource["process.pid"] = pid
                                resource["process.real_user.id"] = uid
                    counters.add("messages", messages)
                    if empty:
                        counters.add("empty", empty)
                    if records or rejects:
                        counters.add("received", len(records))
                        await deliver(Intake(records, rejects, None, source, size))
                    if closed:
                        return
        finally:
            self._open.discard(conn)
            self._connections -= 1
            if self._connections == 0 and self._idle is not None:
                self._idle.set()

    async def commit(self, mark: Any) -> None:
        """Nothing to commit: what the socket delivered is not replayable."""

    async def aclose(self) -> None:
        """Stop listening and remove the socket file (unless it was inherited). Idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.close()
        if not self._inherited and not self._draining:
            try:
                os.unlink(self.config.path)
            except FileNotFoundError:
                pass
