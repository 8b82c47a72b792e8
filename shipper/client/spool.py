"""The client's spool file: append-only NDJSON that the daemon reads when the socket cannot take a record.

On-disk format and invariants (docs/transports.md; the reader is `shipper.receivers.spool`):
- A file is `<spool_dir>/<service>.<pid>.<unix_ms>.ndjson`, one record a line, owned by one process. The
  service is reduced to `[A-Za-z0-9_.-]` and never starts with a dot (dot-names are not read).
- A file is born under `.<final name>.tmp`, locked with `flock(LOCK_EX | LOCK_NB)`, then renamed: the
  daemon never sees a file its writer has not locked yet.
- The writer keeps the descriptor open, the lock held, for as long as it writes to the file. Closing it
  (rotation, configure() again, exit, or death) releases the lock: the daemon may then delete the file
  once it has read all of it.
- Each record is one `os.write()` of a whole line on an `O_APPEND` descriptor; a line counts once its
  `\\n` is written. A short write is cut back (`ftruncate`) so the file never holds half a line that a
  later line would glue onto.
- Past `max_bytes` the next file is opened first, by the same protocol, then the old one is closed. If
  no file can be opened, opening is tried again at most once a second: no syscalls per record meanwhile.
- A forked child closes its inherited descriptor without unlocking (the lock belongs to the open file
  description it shares with the parent) and opens its own file, under its own pid, when it first spools.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time

__all__ = ["SpoolFile", "spool_file_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def spool_file_name(service: str, pid: int, unix_ms: int) -> str:
    """`<service>.<pid>.<unix_ms>.ndjson`, the service made safe for a file name."""
    safe = _UNSAFE.sub("_", service).lstrip(".") or "python"
    return f"{safe}.{pid}.{unix_ms}.ndjson"


class SpoolFile:
    """This process's current spool file; `write()` raises OSError when the spool cannot take a line."""

    def __init__(self, directory: str, service: str, max_bytes: int) -> None:
        self.directory = directory
        self.service = service
        self.max_bytes = max_bytes
        self.path: str | None = None
        self._fd = -1
        self._size = 0
        self._lock = threading.Lock()
        self._retry_at = 0.0  # after a failed open: monotonic time of the next attempt
        self._open_error: tuple[int, str] = (0, "")

    def write(self, line: bytes) -> None:
        """Append one whole line (or several whole lines) with one write."""
        size = len(line)
        with self._lock:
            if self._fd < 0 or (self._size and self._size + size > self.max_bytes):
                self._open_next()
            fd = self._fd
            try:
                written = os.write(fd, line)
                if written != size:  # disk full halfway: finish the line or take it back
                    written += os.write(fd, line[written:])
            except OSError:
                self._cut_back(fd)
                raise
            if written != size:
                self._cut_back(fd)
                raise OSError(f"short write to spool file {self.path}: {written} of {size} bytes")
            self._size += written

    def close(self) -> None:
        """Close the file, which releases its lock: the daemon may delete it once read. Idempotent."""
        with self._lock:
            fd, self._fd, self.path = self._fd, -1, None
            if fd >= 0:
                os.close(fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's file without unlocking it; the next write opens our own."""
        self._lock = threading.Lock()  # the parent's lock may have been held by a thread that is gone
        self._retry_at = 0.0
        fd, self._fd, self.path = self._fd, -1, None
        if fd >= 0:
            try:
                os.close(fd)  # never flock(LOCK_UN): the lock is shared with the parent's descriptor
            except OSError:
                pass

    def _cut_back(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            pass

    def _open_next(self) -> None:
        """Open the next file; if that fails, keep writing to the current one if there is one."""
        now = time.monotonic()
        if now < self._retry_at:
            if self._fd >= 0:
                return
            raise OSError(*self._open_error)  # a new instance: re-raising one would grow its traceback
        try:
            self._create()
        except OSError as exc:
            self._retry_at = now + 1.0
            self._open_error = (exc.errno or 0, f"cannot open a spool file in {self.directory}: {exc}")
            if self._fd < 0:
                raise

    def _create(self) -> None:
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        pid = os.getpid()
        unix_ms = time.time_ns() // 1_000_000
        while True:  # two files within one millisecond (tiny max_bytes): take the next free name
            name = spool_file_name(self.service, pid, unix_ms)
            final = os.path.join(self.directory, name)
            temporary = os.path.join(self.directory, f".{name}.tmp")
            if not os.path.exists(final):
                try:
                    fd = os.open(temporary, _FLAGS, 0o640)
                    break
                except FileExistsError:
                    pass
            unix_ms += 1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, final)
        except OSError:
            os.close(fd)
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        old, self._fd, self.path, self._size = self._fd, fd, final, 0
        if old >= 0:
            os.close(old)  # after the new file exists: the daemon may now finish the old one
