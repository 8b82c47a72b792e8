"""Receiver `unix_socket`: NDJSON messages on an AF_UNIX SOCK_SEQPACKET socket (docs/transports.md).

Each connection is one sending process; the kernel keeps message boundaries and tells us the sender's
pid/uid/gid (`SO_PEERCRED`), which is attached to its records as resource `process.pid` and
`process.real_user.id`. A connection is drained until `EAGAIN` and what arrived is delivered as one
intake, so a busy sender costs one pipeline hand-off per wake-up, not per span. A drain stops as soon
as the pipeline's intake budget (settings `intake`, shipper.intake) would be full, and no connection
reads while it is full: the kernel buffer, then the client's spool, hold what waits, so what this
receiver holds in memory is bounded whatever the shape of the messages.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import socket
import stat
import struct
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
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: `flags & IntFlag` would run enum code per message


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
        """Accept senders until cancelled."""
        assert self._listener is not None, "open() first"
        listener = self._listener
        async with anyio.create_task_group() as tg:
            while True:
                await anyio.wait_readable(listener)
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:  # EMFILE and friends: say so, back off, keep going
                        log.error("Cannot accept a connection on %s: %s.", self.config.path, exc.strerror)
                        await anyio.sleep(0.5)
                        break
                    pid, uid, gid = _PEERCRED.unpack(
                        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                    )
                    if self._restricted and uid not in self._allowed and gid not in self._allowed_gids:
                        self.counters.add("refused")
                        log.warning("Refused a sender with uid %d gid %d (pid %d) on %s: neither is in "
                                    "allowed_uids or allowed_gids.", uid, gid, pid, self.config.path)
                        conn.close()
                        continue
                    self.counters.add("connections")
                    tg.start_soon(self._serve, conn, pid, uid, deliver)

    async def _serve(self, conn: socket.socket, pid: int, uid: int, deliver: Deliver) -> None:
        conn.setblocking(False)
        self._connections += 1
        source = f"{self.ctx.name} pid={pid} uid={uid}"
        max_record = self.ctx.max_record_bytes
        counters = self.counters
        view = self._view
        budget = self.ctx.intake
        try:
            with conn:
                while True:
                    if budget is not None:
                        await budget.wait_room()
                    await anyio.wait_readable(conn)
                    records: list[dict[str, Any]] = []
                    rejects: list[Reject] = []
                    size = messages = 0
                    closed = False
                    for _ in range(_DRAIN_MESSAGES):
                        if budget is not None and not budget.has_room(len(records) + len(rejects), size):
                            break  # the rest waits in the kernel buffer until the pipeline catches up
                        try:
                            n, _, flags, _ = conn.recvmsg_into([view])
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            closed = True
                            break
                        if n == 0:
                            closed = True
                            break
                        messages += 1
                        if flags & _MSG_TRUNC:
                            rejects.append(Reject("too_large", f"message over {len(view)} bytes", bytes(view[:1024])))
                            continue
                        size += n
                        got, bad = decode_payload(bytes(view[:n]), max_record)
                        records.extend(got)
                        rejects.extend(bad)
                    if records:
                        for rec in records:
                            resource = rec.get("resource")
                            if resource is None:
                                rec["resource"] = {"process.pid": pid, "process.real_user.id": uid}
                            else:
                                resource["process.pid"] = pid
                                resource["process.real_user.id"] = uid
                    counters.add("messages", messages)
                    if records or rejects:
                        counters.add("received", len(records))
                        await deliver(Intake(records, rejects, None, source, size))
                    if closed:
                        return
        finally:
            self._connections -= 1

    async def commit(self, mark: Any) -> None:
        """Nothing to commit: what the socket delivered is not replayable."""

    async def aclose(self) -> None:
        """Stop listening and remove the socket file (unless it was inherited). Idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.close()
        if not self._inherited:
            try:
                os.unlink(self.config.path)
            except FileNotFoundError:
                pass
