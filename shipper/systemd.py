"""systemd integration: readiness, status, reload, stop and watchdog notifications, and socket activation.

Both protocols are spoken with the standard library (no libsystemd), as sd_notify(3) and
sd_listen_fds(3) document them:

- Notify: one datagram of newline-separated `KEY=VALUE` lines to the AF_UNIX SOCK_DGRAM socket named by
  `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace). `READY=1` once every receiver is bound;
  `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around a reload; `STOPPING=1` at shutdown; `STATUS=`
  with live counts at each of those and every few seconds while running.
- Watchdog: with `$WATCHDOG_USEC` set (and `$WATCHDOG_PID`, when set, naming us), `WATCHDOG=1` every half
  period, sent by a task on the daemon's own event loop: a loop that hangs stops pinging, and systemd
  kills and restarts the service (`WatchdogSec=` with `Restart=on-failure`).
- Socket activation: `$LISTEN_PID` (must be us), `$LISTEN_FDS` sockets from fd 3, `$LISTEN_FDNAMES`.
  Each inherited AF_UNIX SOCK_SEQPACKET socket goes to the `unix_socket` receiver configured with its
  path, else the one named like it (`FileDescriptorName=`), else the first receiver still without one;
  that receiver then listens on it instead of binding (and leaves the file in place at exit).

The variables are read once, by `install`, and removed from the environment so children do not act on
them. Without them every function here does nothing, so `install` is always safe to call.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from shipper.pipeline import Pipeline

__all__ = ["Notifier", "adopt_sockets", "inherited_sockets", "install", "match_sockets", "status_line"]

log = logging.getLogger("shipper.systemd")

LISTEN_FDS_START = 3
STATUS_PERIOD = 5.0
"""Seconds between `STATUS=` updates while running (more often when the watchdog asks for it)."""


class Notifier:
    """Sends sd_notify messages to one `$NOTIFY_SOCKET` address; a failed send is logged, never raised."""

    def __init__(self, address: str, watchdog_usec: int = 0) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = watchdog_usec
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._last_status = ""

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Notifier | None:
        """A notifier for `$NOTIFY_SOCKET` (and `$WATCHDOG_USEC`), or None when not run by systemd."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address or address[0] not in "/@":
            return None
        watchdog = 0
        pid = env.get("WATCHDOG_PID", "")
        try:
            if not pid or int(pid) == os.getpid():
                watchdog = int(env.get("WATCHDOG_USEC", "0") or 0)
        except ValueError:
            log.warning("Ignoring the watchdog: WATCHDOG_USEC=%r or WATCHDOG_PID=%r is not a number.",
                        env.get("WATCHDOG_USEC"), pid)
        return cls(address, max(watchdog, 0))

    def notify(self, *lines: str, wait: float = 0.0) -> bool:
        """Send one message made of `lines`, waiting up to `wait` seconds for room; True when it left.

        Periodic messages (`WATCHDOG=1`, `STATUS=`) never wait: the next one follows soon. State changes
        (`READY=1`, `RELOADING=1`, `STOPPING=1`) wait a little, as libsystemd's blocking send would.
        """
        try:
            self._sock.settimeout(wait)  # 0: non-blocking
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), self.address)
        except OSError as exc:
            log.warning("Cannot notify systemd at %s: %s (the service manager may restart shipper).",
                        self.address.replace("\0", "@"), exc.strerror or exc)
            return False
        return True

    def status(self, pipeline: Pipeline, *lines: str, force: bool = False) -> None:
        """Send `lines` plus `STATUS=` with live counts (the status only when it changed, unless `force`)."""
        try:
            text = status_line(pipeline.status())
        except Exception:  # figures are best effort; notifications must still go out
            log.exception("Cannot compute the status line for systemd.")
            text = self._last_status
        if force or text != self._last_status:
            lines = (*lines, f"STATUS={text}")
            self._last_status = text
        if lines:
            self.notify(*lines, wait=1.0 if force else 0.0)

    def __call__(self, event: str, pipeline: Pipeline) -> None:
        """The pipeline listener: `ready`, `reloading` and `stopping` become sd_notify messages."""
        if event == "ready":
            self.status(pipeline, "READY=1", force=True)
        elif event == "reloading":
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reloading the configuration.",
                        wait=1.0)
        elif event == "stopping":
            self.notify("STOPPING=1", "STATUS=Stopping: flushing what was received.", wait=1.0)

    async def keepalive(self, pipeline: Pipeline) -> None:
        """Ping the watchdog every half period and refresh `STATUS=`; runs on the daemon's event loop."""
        period = STATUS_PERIOD
        if self.watchdog_usec:
            period = min(period, self.watchdog_usec / 2e6)
        while True:
            await anyio.sleep(period)
            self.status(pipeline, *(("WATCHDOG=1",) if self.watchdog_usec else ()))

    def close(self) -> None:
        """Close the socket. Idempotent."""
        self._sock.close()


def status_line(status: dict[str, Any]) -> str:
    """One line of live counts for `STATUS=` (what `systemctl status` shows)."""
    exporters = status.get("exporters", {})
    exported = sum(int(f.get("exported", 0)) for f in exporters.values())
    received = int(status.get("pipeline", {}).get("received", 0))
    parts = [f"received {received}", f"exported {exported}"]
    items = sum(int(f.get("queue_items", 0) or 0) for f in exporters.values())
    if items:
        parts.append(f"queued {items}")
    dropped = status.get("dropped") or {}
    if dropped:
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
        parts.append(f"dropped {sum(dropped.values())} ({detail})")
    else:
        parts.append("dropped 0")
    return ", ".join(parts)


def inherited_sockets(environ: dict[str, str] | None = None) -> list[tuple[socket.socket, str]]:
    """The sockets systemd passed us (`$LISTEN_FDS`), each with its name; removes the variables."""
    env = os.environ if environ is None else environ
    pid, count, names = (env.pop(key, "") for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if not pid or not count:
        return []
    try:
        if int(pid) != os.getpid():
            log.debug("LISTEN_PID=%s is not this process (%d); the sockets are not ours.", pid, os.getpid())
            return []
        n = int(count)
    except ValueError:
        log.warning("Ignoring socket activation: LISTEN_PID=%r or LISTEN_FDS=%r is not a number.", pid, count)
        return []
    labels = names.split(":") if names else []
    out = []
    for i in range(n):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            log.warning("Ignoring inherited fd %d: it is not a usable socket (%s).", fd, exc.strerror or exc)
            continue
        out.append((sock, labels[i] if i < len(labels) else "unknown"))
    return out


def _bound_path(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, bytes):  # abstract namespace
        return "@" + name[1:].decode("utf-8", "replace")
    return str(name)


def match_sockets(receivers: dict[str, Any],
                  sockets: Iterable[tuple[socket.socket, str]]) -> list[tuple[str, socket.socket]]:
    """Pair inherited SOCK_SEQPACKET sockets with receivers: by path, then by name, then first free one."""
    free = {name: r for name, r in receivers.items() if hasattr(r, "adopt")}
    pairs: list[tuple[str, socket.socket]] = []
    unmatched: list[tuple[socket.socket, str]] = []
    for sock, label in sockets:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            log.warning("Ignoring inherited socket %r (fd %d): shipper takes AF_UNIX SOCK_SEQPACKET sockets "
                        "only (ListenSequentialPacket=).", label, sock.fileno())
            continue
        path = os.path.normpath(_bound_path(sock))
        by_path = [n for n, r in free.items() if os.path.normpath(str(r.config.path)) == path]
        chosen = by_path[0] if by_path else (label if label in free else None)
        if chosen is None:
            unmatched.append((sock, label))
            continue
        pairs.append((chosen, sock))
        del free[chosen]
    for sock, label in unmatched:
        if not free:
            log.warning("The inherited socket %s (%s) has no unix_socket receiver left to take it; it stays "
                        "unused. Add a unix_socket receiver with path %s.", _bound_path(sock), label,
                        _bound_path(sock))
            continue
        chosen = next(iter(free))
        log.info("Receiver %s takes the inherited socket %s instead of its configured path %s.",
                 chosen, _bound_path(sock), free[chosen].config.path)
        pairs.append((chosen, sock))
        del free[chosen]
    return pairs


def adopt_sockets(pipeline: Pipeline, sockets: list[tuple[socket.socket, str]]) -> list[str]:
    """Hand inherited sockets to the pipeline's unix_socket receivers; returns the receivers that took one."""
    taken = []
    for name, sock in match_sockets(pipeline.receivers, sockets):
        receiver: Any = pipeline.receivers[name]  # a unix_socket receiver: match_sockets picks only those
        receiver.adopt(sock)
        log.info("Receiver %s listens on %s, inherited from systemd.", name, _bound_path(sock))
        taken.append(name)
    return taken


def install(pipeline: Pipeline) -> Notifier | None:
    """Take inherited sockets and, under systemd, register the notify listener and the watchdog task."""
    adopt_sockets(pipeline, inherited_sockets())
    notifier = Notifier.from_environ()
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(key, None)
    if notifier is None:
        return None
    pipeline.listeners.append(notifier)
    pipeline.services.append(notifier.keepalive)
    if notifier.watchdog_usec:
        log.info("Pinging the systemd watchdog every %.1fs.", min(STATUS_PERIOD, notifier.watchdog_usec / 2e6))
    return notifier
