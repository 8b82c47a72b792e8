"""The client transport: one record, one SOCK_SEQPACKET message; the spool when the socket cannot take it.

`emit` never raises into the app and never blocks it (docs/transports.md, Client delivery rule). The socket is non-blocking and connected
lazily; the spool is a plain local append. One decision per errno:

- send, EAGAIN (the daemon is behind), ENOBUFS, ENOMEM: keep the socket, spool the record (`socket_full`),
  and spool the records of the next `FULL_PAUSE` seconds as well without trying the socket: a full
  buffer does not empty in microseconds, and each failed send costs the app a raised OSError;
- send, EMSGSIZE, or a line above `max_message_bytes`: keep the socket, spool the record (`too_large`);
- send, any other errno (EPIPE, ECONNRESET: the daemon went away): close the socket, spool the record
  (`socket_unavailable`), reconnect a second later at the earliest;
- connect, any errno (ENOENT, ECONNREFUSED: no daemon; EAGAIN: its backlog is full; EACCES): the daemon is
  down, spool the record (`socket_unavailable`), try again a second later at the earliest;
- after connect, the daemon's one-byte verdict (`+` accepted, `-` refused by its `allowed_uids`) is read
  without blocking before each send until it has come. Until then records are sent and a copy kept
  (at most `MAX_UNCONFIRMED` records, `MAX_UNCONFIRMED_BYTES`; past that they are spooled, `socket_unconfirmed`); on `+` the copies are
  counted `sent` and dropped, on `-` or a close the copies are spooled (`refused`) and the socket closed;
  after a `-`, records are spooled as `refused` until the next connect (a second later at the earliest).
  Nothing is counted `sent` that the daemon did not take. A connection still unconfirmed when the
  transport closes has its copies spooled (the daemon may also read them: at least once, never lost).

The reason goes to `statistics()["spooled_by_reason"]`; in mode `socket` the record is dropped instead and
counted under `dropped[reason]`. A spool that cannot be written (ENOSPC, EACCES, EROFS, ENOTDIR...) drops
the record as `spool_error`; a record no encoder can write is dropped as `unencodable`. Connecting is tried
at most once a second, whatever happens, never once per span.

Counters are plain ints bumped under the GIL: cheap, and exact except for the rare increment two threads
race on.
"""

from __future__ import annotations

import atexit
import errno
import math
import os
import socket
import threading
import time
from typing import Any

from . import config
from .encode import FAST_OPTIONS, encode_record, fast_dumps, repr_default
from .spool import SpoolFile

__all__ = ["Transport", "active", "configure", "emit_record", "flush", "install", "shutdown", "statistics"]

SNDBUF_BYTES = 4 * 1024 * 1024  # about 6,000 records of 500 B queue in the kernel before EAGAIN
RECONNECT_INTERVAL = 1.0  # seconds between connect attempts while the daemon is down
FULL_PAUSE = 0.002  # seconds records go straight to the spool after the socket said it was full
MAX_UNCONFIRMED = 1024  # records sent (and copies kept) before the daemon's verdict; past that, spooled
MAX_UNCONFIRMED_BYTES = 4 * 1024 * 1024  # and at most this many bytes of copies
ACCEPTED = b"+"  # the daemon's verdict messages (shipper.receivers.unix_socket)
_KEEP_SOCKET = {errno.EAGAIN: "socket_full", errno.ENOBUFS: "socket_full", errno.ENOMEM: "socket_full",
                errno.EMSGSIZE: "too_large"}
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)  # EPIPE, not SIGPIPE, even if the app restored SIG_DFL

monotonic = time.monotonic  # module attribute so tests can move the clock


class Transport:
    """Sends encoded records to the daemon's socket, or spools them; counts every outcome."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.service = settings.service
        self.sent = 0
        self.spooled_by_reason: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.connect_attempts = 0
        self.socket_error: str | None = None
        self.spool_error: OSError | None = None
        self._sock: socket.socket | None = None  # a connection the daemon accepted (its verdict was read)
        self._paused: socket.socket | None = None  # that connection, while its buffer is full (FULL_PAUSE)
        self._paused_until = 0.0
        self._unconfirmed: socket.socket | None = None  # connected, verdict not read yet
        self._held: list[bytes] = []  # what was sent on `_unconfirmed`: spooled if the daemon refuses
        self._held_bytes = 0
        self._refused = False  # the daemon's last verdict was `-`: records go to the spool as `refused`
        self._retry_at = 0.0
        self._connect_lock = threading.Lock()
        self._spool = SpoolFile(settings.spool_dir, settings.service, settings.spool_max_bytes)
        self._max_value_bytes = settings.max_value_bytes
        self._max_message_bytes = settings.max_message_bytes
        self._fits = min(self._max_value_bytes, self._max_message_bytes)  # a line emit() sends as it is
        # The mode is decided here, once: send() and emit() never look at it.
        self._fallback = self._drop_line if settings.mode == "socket" else self._spool_line
        if settings.mode == "spool":
            self.send = self._spool_always  # type: ignore[method-assign]
        if settings.disabled:
            self.emit = self._discard  # type: ignore[method-assign]

    def emit(self, record: dict[str, Any]) -> None:
        """Encode one record and send it; never raises. The common case is inline: dumps, one send."""
        try:
            line = fast_dumps(record, default=repr_default, option=FAST_OPTIONS)  # encode_record, inline
        except Exception:
            line = b""  # never a dumps result (it ends in a newline): the slow path encodes it
        sock = self._sock
        if sock is not None and 0 < len(line) <= self._fits:  # no string to cap, and one message
            try:
                sock.send(line, _SEND_FLAGS)
            except OSError as exc:
                self._send_failed(sock, line, exc)
            else:
                self.sent += 1
            return
        if self._paused is not None and 0 < len(line) <= self._fits and monotonic() < self._paused_until:
            try:  # the socket was full a moment ago: to the spool, as send() would
                self._fallback(line, "socket_full")
            except Exception:
                self._count_drop("internal_error")
            return
        self._emit_slow(record, line)

    def _emit_slow(self, record: dict[str, Any], line: bytes) -> None:
        """emit() for a record dumps refused or that may hold a string to cap, or with no connection yet."""
        try:
            if not line or len(line) > self._max_value_bytes:
                line = encode_record(record, self._max_value_bytes)  # may hold a string to cap
        except Exception:
            self._count_drop("unencodable")
            return
        try:
            self.send(line)
        except Exception:  # a bug of ours must not reach the app
            self._count_drop("internal_error")

    def send(self, line: bytes) -> None:
        """Send one encoded line (or several whole lines) as one message; spool or drop it if it can't go."""
        if len(line) > self._max_message_bytes:
            self._fallback(line, "too_large")
            return
        paused = self._paused
        if paused is not None:
            if monotonic() < self._paused_until:
                self._fallback(line, "socket_full")
                return
            self._paused = None
            if self._sock is None:
                self._sock = paused
        sock = self._sock or self._connect()
        if sock is None:
            if self._unconfirmed is not None:
                self._send_unconfirmed(line)
                return
            self._fallback(line, "refused" if self._refused else "socket_unavailable")
            return
        self._send_on(sock, line)

    def _send_on(self, sock: socket.socket, line: bytes) -> None:
        """Send on an accepted connection (emit() has this inline); count it, or spool it if it fails."""
        try:
            sock.send(line, _SEND_FLAGS)
        except OSError as exc:
            self._send_failed(sock, line, exc)
        else:
            self.sent += 1

    def _send_unconfirmed(self, line: bytes) -> None:
        """Send on a connection whose verdict has not come yet, keeping a copy in case it is a refusal."""
        with self._connect_lock:
            sock = self._unconfirmed
            confirmed = self._sock if sock is None else None
            if confirmed is not None:  # another thread read the verdict meanwhile: a plain send
                reason = ""
            elif (sock is None or len(self._held) >= MAX_UNCONFIRMED
                    or self._held_bytes + len(line) > MAX_UNCONFIRMED_BYTES):
                reason = ("socket_unconfirmed" if sock is not None else "refused" if self._refused
                          else "socket_unavailable")
            else:
                try:
                    sock.send(line, _SEND_FLAGS)
                except OSError as exc:
                    reason = _KEEP_SOCKET.get(exc.errno or 0) or ""
                    if not reason:  # the daemon closed it: a refusal, or it went away
                        self._refused_locked(f"lost {self.settings.socket_path}: {exc.strerror or exc}")
                        reason = "refused"
                else:
                    self._held.append(line)
                    self._held_bytes += len(line)
                    return
        if confirmed is not None:
            self._send_on(confirmed, line)
            return
        self._fallback(line, reason)

    def _settle_locked(self) -> None:
        """Read the daemon's verdict on `_unconfirmed` if it has come (never blocks); caller holds the lock."""
        sock = self._unconfirmed
        if sock is None:
            return
        try:
            verdict = sock.recv(16, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return  # not accepted yet
        except OSError as exc:
            self._refused_locked(f"lost {self.settings.socket_path}: {exc.strerror or exc}")
            return
        self._refused = verdict != ACCEPTED and bool(verdict)
        if verdict == ACCEPTED:
            self._unconfirmed = None
            self.sent += len(self._held)
            self._held, self._held_bytes = [], 0
            self._sock = sock
            return
        self._refused_locked(f"refused by the daemon on {self.settings.socket_path} (not in its allowed_uids "
                             "or allowed_gids)" if verdict else f"{self.settings.socket_path} closed the connection")

    def _refused_locked(self, why: str, reason: str = "refused") -> None:
        """The unconfirmed connection is refused or gone: spool what was sent on it, close it, retry later."""
        sock, self._unconfirmed = self._unconfirmed, None
        held, self._held, self._held_bytes = self._held, [], 0
        if sock is not None:
            sock.close()
        self.socket_error = why
        self._retry_at = max(self._retry_at, monotonic() + RECONNECT_INTERVAL)
        for line in held:
            try:
                self._fallback(line, reason)
            except Exception:
                self._count_drop("internal_error")

    def _send_failed(self, sock: socket.socket, line: bytes, exc: OSError) -> None:
        reason = _KEEP_SOCKET.get(exc.errno or 0)
        if reason is None:
            self._disconnect(sock, exc)
            reason = "socket_unavailable"
        elif reason == "socket_full" and self._sock is sock:  # the next records skip the socket a moment
            self._paused_until = monotonic() + FULL_PAUSE
            self._paused, self._sock = sock, None
        try:
            self._fallback(line, reason)
        except Exception:
            self._count_drop("internal_error")

    def confirm(self, timeout: float = 1.0) -> bool:
        """Wait up to `timeout` s for the daemon's verdict on a new connection; True once nothing is unconfirmed.

        This waits, so it is for command-line tools and tests, never for an app's hot path (emit never waits).
        """
        deadline = monotonic() + timeout
        while True:
            with self._connect_lock:
                self._settle_locked()
                if self._unconfirmed is None:
                    return True
            if monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def statistics(self) -> dict[str, Any]:
        """A snapshot of the counters and where records go (the daemon's verdict read first, if it came)."""
        if self._unconfirmed is not None:
            with self._connect_lock:
                self._settle_locked()
        return {
            "sent": self.sent,
            "spooled": sum(self.spooled_by_reason.values()),
            "spooled_by_reason": dict(self.spooled_by_reason),
            "dropped": dict(self.dropped),
            "socket_connected": self._sock is not None or self._paused is not None,
            "unconfirmed": len(self._held),
            "connect_attempts": self.connect_attempts,
            "socket_error": self.socket_error,
            "spool_file": self._spool.path,
            "spool_error": None if self.spool_error is None else str(self.spool_error),
            "socket_path": self.settings.socket_path,
            "spool_dir": self.settings.spool_dir,
            "mode": "disabled" if self.settings.disabled else self.settings.mode,
            "service": self.service,
        }

    def close(self) -> None:
        """Close the socket and the spool file (releasing its lock); later records are dropped as `closed`."""
        self.emit = self._discard_closed  # type: ignore[method-assign]
        self._retry_at = math.inf
        with self._connect_lock:
            self._settle_locked()
            if self._unconfirmed is not None:  # no verdict yet: keep the copies (at least once)
                self._refused_locked("closed before the daemon's verdict came", "unconfirmed")
        for sock in (self._sock, self._paused):
            if sock is not None:
                sock.close()
        self._sock = self._paused = None
        self._spool.close()

    def after_fork_in_child(self) -> None:
        """Forget the parent's socket and spool file (closed, never unlocked) and its counters."""
        self._connect_lock = threading.Lock()
        for sock in (self._sock, self._unconfirmed, self._paused):
            if sock is not None:
                sock.close()  # close(2) only: the parent's connection lives on
        self._sock = self._unconfirmed = self._paused = None
        self._held, self._held_bytes = [], 0
        self._spool.forget_after_fork()
        self._retry_at = 0.0
        self.sent = self.connect_attempts = 0
        self.spooled_by_reason = {}
        self.dropped = {}
        self.socket_error = self.spool_error = None

    def _connect(self) -> socket.socket | None:
        # Threads racing to connect wait for the first one (a non-blocking connect takes microseconds)
        # and then use its socket, rather than spooling.
        with self._connect_lock:
            if self._unconfirmed is not None:
                self._settle_locked()
                return self._sock
            return self._sock or self._connect_locked()

    def _connect_locked(self) -> socket.socket | None:
        """Connect; the socket is `_unconfirmed` until the daemon's verdict is read (returned if it already came)."""
        now = monotonic()
        if now < self._retry_at:
            return None
        self._retry_at = now + RECONNECT_INTERVAL
        self.connect_attempts += 1
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as exc:  # EMFILE, ENFILE...
            self.socket_error = f"cannot create a socket: {exc.strerror or exc}"
            return None
        try:
            sock.setblocking(False)  # also makes connect() fail with EAGAIN, not wait, on a full backlog
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
            except OSError:
                pass  # the kernel's default buffer still works, only smaller
            sock.connect(self.settings.socket_path)
        except OSError as exc:
            sock.close()
            self.socket_error = f"cannot connect to {self.settings.socket_path}: {exc.strerror or exc}"
            self._refused = False
            return None
        self._unconfirmed, self.socket_error = sock, None
        self._settle_locked()  # a daemon that accepted at once has sent `+` already
        return self._sock

    def _disconnect(self, sock: socket.socket, exc: OSError) -> None:
        self.socket_error = f"lost {self.settings.socket_path}: {exc.strerror or exc}"
        if self._sock is sock:
            self._sock = None
            self._retry_at = max(self._retry_at, monotonic() + RECONNECT_INTERVAL)
        sock.close()

    def _spool_line(self, line: bytes, reason: str) -> None:
        try:
            self._spool.write(line)
        except OSError as exc:
            exc.__traceback__ = None  # kept for statistics(): no frames held alive
            self.spool_error = exc
            self._count_drop("spool_error")
            return
        self.spooled_by_reason[reason] = self.spooled_by_reason.get(reason, 0) + 1

    def _spool_always(self, line: bytes) -> None:
        self._spool_line(line, "mode_spool")

    def _drop_line(self, line: bytes, reason: str) -> None:
        self._count_drop(reason)

    def _count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _discard(self, record: dict[str, Any]) -> None:
        self._count_drop("disabled")

    def _discard_closed(self, record: dict[str, Any]) -> None:
        self._count_drop("closed")


_active: Transport | None = None
_install_lock = threading.Lock()


def active() -> Transport:
    """The process's transport, started from the environment on first use."""
    global _active
    transport = _active
    if transport is not None:
        return transport
    with _install_lock:
        if _active is None:
            _active = Transport(config.load_settings(strict=False))
        return _active


def install(settings: config.Settings) -> Transport:
    """Make a transport for `settings` the active one; the previous one is closed."""
    return _replace(Transport(settings))  # type: ignore[return-value]


def configure(
    service: str | None = None,
    socket: str | None = None,
    spool_dir: str | None = None,
    mode: str | None = None,
    disabled: bool | None = None,
    capture_input: bool | None = None,
    capture_output: bool | None = None,
    max_value_bytes: int | None = None,
    max_message_bytes: int | None = None,
    spool_max_bytes: int | None = None,
) -> config.Settings:
    """Set up the shim; optional, since the first span starts it from the environment.

    An argument left at None falls back to its `SHIPPER_*` variable (SHIPPER_SERVICE, SHIPPER_SOCKET,
    SHIPPER_SPOOL_DIR, SHIPPER_MODE, SHIPPER_DISABLED), then to its default. Bad values raise ValueError,
    listing every problem. Calling it again replaces the transport: the old socket and spool file are
    closed (closing the spool file tells the daemon that file is finished).
    """
    settings = config.load_settings(
        strict=True,
        service=service,
        socket=socket,
        spool_dir=spool_dir,
        mode=mode,
        disabled=disabled,
        capture_input=capture_input,
        capture_output=capture_output,
        max_value_bytes=max_value_bytes,
        max_message_bytes=max_message_bytes,
        spool_max_bytes=spool_max_bytes,
    )
    install(settings)
    return settings


def shutdown() -> None:
    """Close the active transport and forget it; the next record starts a new one from the environment."""
    _replace(None)


def _replace(new: Transport | None) -> Transport | None:
    global _active
    with _install_lock:
        old, _active = _active, new
    if old is not None:
        old.close()
    return new


def emit_record(record: dict[str, Any]) -> None:
    """Send one finished span record (docs/record.md) to the daemon, through the shim's transport.

    For other producers of records in this process (the OpenTelemetry exporter, the litellm callback):
    `record` is a complete v1 record, built by the caller, with `trace_id`, `span_id`, `name`, `start_ns`
    and `end_ns`; the transport adds nothing to it (not even `service`). It is encoded (values JSON cannot
    hold become their repr, strings past `max_value_bytes` are cut and marked) and sent like a span's
    record: on the socket, else the spool, per the configured mode. Never raises, never blocks; the
    outcome shows in `statistics()`.
    """
    try:
        (_active or active()).emit(record)
    except Exception:  # even a broken environment must not reach the app
        pass


def statistics() -> dict[str, Any]:
    """Counters of this process's records: sent, spooled (by reason), dropped (by reason), and where to."""
    return active().statistics()


def flush() -> None:
    """Nothing to do, by design: a record is on the socket or in the spool file when its span ends.

    It exists so that code written for buffering tracers (which must flush before exit) runs unchanged.
    """


def _after_fork_in_child() -> None:
    global _install_lock
    _install_lock = threading.Lock()
    if _active is not None:
        _active.after_fork_in_child()


EXIT_VERDICT_WAIT = 0.1  # seconds the interpreter's exit waits, at most, for a verdict still to come


def _at_exit() -> None:
    """At interpreter exit: settle a connection still waiting for its verdict.

    A daemon that is up answers within a millisecond, so this waits for it (at most `EXIT_VERDICT_WAIT`,
    and only when something is unconfirmed); without an answer the copies are spooled (the daemon may
    read them too: at least once).
    """
    transport = _active
    if transport is None or transport._unconfirmed is None:
        return
    try:
        import select

        sock = transport._unconfirmed
        if sock is not None:
            select.select([sock], [], [], EXIT_VERDICT_WAIT)
        with transport._connect_lock:
            transport._settle_locked()
            if transport._unconfirmed is not None:
                transport._refused_locked("exited before the daemon's verdict came", "unconfirmed")
    except Exception:
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
