"""Receiver `spool`: complete lines of the append-only NDJSON spool files that clients write (docs/transports.md, The spool).

Invariants:
- A line counts once its `\\n` is written; bytes after the last `\\n` are left for a later read.
- The committed offset of a file only advances once the pipeline says every record before it is in every
  exporter's hands; offsets live in `<state_dir>/spool/<receiver>.offsets.json`, replaced atomically. After
  a crash reading resumes at the committed offset, so records may come twice, never not at all.
- A writer holds `flock(LOCK_EX)` on its file for as long as it writes to it, and creates files under a
  dot-name before renaming them, so a file we can lock is finished. A finished file is deleted once it is
  read and committed to its end; a torn last line (the writer died mid-write) is counted as malformed.
- Only regular files are read, opened with `O_NONBLOCK | O_NOFOLLOW` and checked with `fstat` on the open
  descriptor: a symlink (`symlink`), a FIFO, device, socket or directory (`not_a_file`), a file with more
  than one link (`hard_link`: it could be another user's file) or owned by a uid outside `allowed_uids`
  (`foreign_owner`) is never read; it is counted as malformed with that reason, noted in the rejects
  file, and removed (links, FIFOs, devices) or moved aside to `<dir>/.set-aside/` (regular files).
- Every file operation runs in a worker thread, so a slow disk or a hostile file never blocks the event
  loop. The uid owning a file is the peer of its records: it is written to their resource as
  `process.real_user.id`, as the socket receiver writes the sender's kernel credentials.
- A line longer than `max_read_bytes` is read whole if it is within `max_record_bytes`; a longer one is
  skipped to its newline and counted `too_large` (never `torn_line`); a torn last line (its writer gone)
  is `torn_line`; blank lines are skipped and counted (`blank_lines`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from shipper.client.paths import resolve_spool_dir
from shipper.component import Context, Deliver, Intake
from shipper.record import Reject, decode_payload
from shipper.values import ByteSize, Duration

__all__ = ["SpoolReceiver"]

log = logging.getLogger("shipper.receivers.spool")


@dataclass(kw_only=True)
class Config:
    """Which directory to read and how eagerly."""

    dir: str = field(default_factory=resolve_spool_dir)
    poll_interval: Duration = field(default=0.25, metadata={"min": 0.01})
    max_read_bytes: ByteSize = field(default=1024 * 1024, metadata={"min": 4096})
    allowed_uids: list[int] = field(default_factory=list)  # owners whose files are read; empty: any owner


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
SET_ASIDE = ".set-aside"


class _Refused(Exception):
    """A spool entry that must not be read: `reason` is what it is counted under."""

    def __init__(self, reason: str, detail: str, regular: bool) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.regular = reason, detail, regular


@dataclass(slots=True)
class _Read:
    """What one look at a file found (computed in a worker thread)."""

    size: int = 0
    uid: int = -1
    chunk: bytes = b""
    writer_done: bool = False
    gone: bool = False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_regular(path: str, allowed: frozenset[int]) -> tuple[int, os.stat_result]:
    """Open `path` for reading only if it is a regular file with one link and an allowed owner.

    Raises `_Refused` with the reason otherwise, FileNotFoundError if it vanished. Never blocks: a FIFO
    opened with O_NONBLOCK returns at once, a symlink fails with ELOOP under O_NOFOLLOW.
    """
    first = os.lstat(path)  # never open a device: opening one can have effects of its own (a tape rewinds)
    if stat.S_ISLNK(first.st_mode):
        raise _Refused("symlink", "a symbolic link", False)
    if not stat.S_ISREG(first.st_mode):
        raise _Refused("not_a_file", _kind(first.st_mode), False)
    try:
        fd = os.open(path, _OPEN_FLAGS)  # swapped since the lstat? O_NOFOLLOW, O_NONBLOCK and fstat still hold
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused("symlink", "a symbolic link", False) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR, errno.ENODEV):  # a socket, a directory, a device
            raise _Refused("not_a_file", f"not a regular file ({exc.strerror})", False) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("not_a_file", _kind(st.st_mode), False)
        if st.st_nlink > 1:
            raise _Refused("hard_link", f"a regular file with {st.st_nlink} links (owner uid {st.st_uid})", True)
        if allowed and st.st_uid not in allowed:
            raise _Refused("foreign_owner", f"owned by uid {st.st_uid}, not in allowed_uids", True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _unlocked(fd: int) -> bool:
    """True when no writer holds the file's lock (it closed, rotated away, or died)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


class SpoolReceiver:
    """Reads spool files from their committed offsets; deletes the finished ones."""

    Config = Config

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.counters = ctx.counters
        self.dir = config.dir
        self._offsets_path = ctx.state_dir / "spool" / f"{ctx.name}.offsets.json"
        self._committed: dict[str, int] = {}
        self._read: dict[str, int] = {}
        self._dirty = False
        self._allowed = frozenset(config.allowed_uids)
        self._ignored: set[str] = set()  # set-aside entries that could not be moved: not looked at again

    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status`: the directory and the unread bytes in it."""
        backlog = 0
        files = 0
        for name in self._names():
            try:
                backlog += os.lstat(os.path.join(self.dir, name)).st_size - self._committed.get(name, 0)
                files += 1
            except OSError:
                pass
        return {"dir": self.dir, "files": files, "backlog_bytes": backlog}

    async def open(self) -> None:
        """Create the directory if needed and load the committed offsets."""
        os.makedirs(self.dir, exist_ok=True)
        self._offsets_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            loaded = orjson.loads(self._offsets_path.read_bytes())
            self._committed = {str(k): int(v) for k, v in loaded.items()}
        except FileNotFoundError:
            self._committed = {}
        except (ValueError, TypeError, AttributeError):
            log.error("The spool offsets file %s is unreadable; reading every spool file from its start "
                      "(records may come twice).", self._offsets_path)
            self._committed = {}
        self._read = dict(self._committed)

    def _names(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        return sorted(n for n in names if n.endswith(".ndjson") and not n.startswith("."))

    async def run(self, deliver: Deliver) -> None:
        """Poll the directory; deliver new complete lines; tidy finished files."""
        while True:
            delivered = await self.poll(deliver)
            await self._persist()
            if not delivered:
                await anyio.sleep(self.config.poll_interval)

    async def poll(self, deliver: Deliver) -> int:
        """One pass over the directory; returns how many bytes were delivered."""
        delivered = 0
        names = await anyio.to_thread.run_sync(self._names)
        for name in names:
            if name not in self._ignored:
                delivered += await self._read_file(name, deliver)
        present = set(names)
        self._ignored &= present
        for gone in [n for n in self._committed if n not in present]:
            del self._committed[gone]
            self._read.pop(gone, None)
            self._dirty = True
        return delivered

    def _look(self, path: str, offset: int, tidy: bool) -> _Read:
        """In a worker thread: open safely, and read up to max_read_bytes from `offset` (or check the lock)."""
        try:
            fd, st = _open_regular(path, self._allowed)
        except FileNotFoundError:
            return _Read(gone=True)
        try:
            got = _Read(size=st.st_size, uid=st.st_uid)
            if st.st_size > offset:
                got.chunk = os.pread(fd, min(st.st_size - offset, self.config.max_read_bytes), offset)
                if got.chunk.rfind(b"\n") < 0:
                    got.writer_done = _unlocked(fd)
            elif tidy:
                got.writer_done = _unlocked(fd)
            return got
        finally:
            os.close(fd)

    async def _read_file(self, name: str, deliver: Deliver) -> int:
        path = os.path.join(self.dir, name)
        offset = self._read.get(name, 0)
        committed = self._committed.get(name, 0)
        try:
            got = await anyio.to_thread.run_sync(self._look, path, offset, committed >= offset)
        except _Refused as refused:
            return await self._set_aside(path, name, refused, deliver)
        except OSError as exc:
            log.error("Cannot read spool file %s: %s.", path, exc.strerror)
            return 0
        if got.gone:
            return 0
        size = got.size
        if size < offset:  # truncated or replaced under us: start over, duplicates are allowed
            log.warning("Spool file %s shrank below its offset; reading it again from the start.", path)
            self._read[name] = self._committed[name] = 0
            return 0
        if size == offset:
            if committed == size and got.writer_done:
                await self._remove(path, name)
            return 0
        chunk = got.chunk
        if not chunk:
            return 0
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) == self.config.max_read_bytes:
            # one line longer than a read: a record may be up to max_record_bytes, so read it whole
            try:
                long_line = await anyio.to_thread.run_sync(self._read_long_line, path, offset)
            except (_Refused, OSError):
                return 0  # swapped or gone since the first look: the next pass decides
            if long_line is None and not got.writer_done:
                return 0  # a long line still being written
            if long_line:
                chunk, end = long_line, len(long_line)
            elif long_line == b"":  # over max_record_bytes: skip to its end, set aside its start
                end = await anyio.to_thread.run_sync(self._skip_long_line, path, offset, size)
                reject = Reject("too_large", f"a line of {end} bytes in {name} is over max_record_bytes "
                                             f"({self.ctx.max_record_bytes})", chunk[:1024])
                self._read[name] = offset + end
                await deliver(Intake([], [reject], (name, offset + end), f"{self.ctx.name} {name}", end))
                return end
        if end == 0:
            if not got.writer_done:
                return 0  # a line still being written
            end = len(chunk)  # the writer is gone: the rest is a torn line
            reject = Reject("torn_line", f"incomplete last line of {name} ({end} bytes)", chunk[:1024])
            self._read[name] = offset + end
            await deliver(Intake([], [reject], (name, offset + end), f"{self.ctx.name} {name}", end))
            return end
        payload = chunk[:end] if end != len(chunk) else chunk
        records, rejects = decode_payload(payload, self.ctx.max_record_bytes)
        blank = payload.count(b"\n") - len(records) - len(rejects)
        if blank > 0:
            self.counters.add("blank_lines", blank)
        uid = got.uid
        for rec in records:  # the file's owner is the peer, like SO_PEERCRED on the socket
            resource = rec.get("resource")
            if resource is None:
                rec["resource"] = {"process.real_user.id": uid}
            else:
                resource["process.real_user.id"] = uid
        self._read[name] = offset + end
        self.counters.add("received", len(records))
        await deliver(Intake(records, rejects, (name, offset + end), f"{self.ctx.name} {name}", end))
        return end

    async def _set_aside(self, path: str, name: str, refused: _Refused, deliver: Deliver) -> int:
        """Count a spool entry that must not be read, note it in the rejects file, and take it away."""
        where = await anyio.to_thread.run_sync(self._take_away, path, name, refused.regular)
        log.warning("Set aside spool entry %s: %s (%s); %s.", path, refused.detail, refused.reason, where)
        self.counters.add("set_aside")
        self._committed.pop(name, None)
        self._read.pop(name, None)
        self._dirty = True
        reject = Reject(refused.reason, f"{name}: {refused.detail}; {where}", b"")
        await deliver(Intake([], [reject], None, f"{self.ctx.name} {name}", 0))
        return 1

    def _take_away(self, path: str, name: str, regular: bool) -> str:
        """Move a regular file aside to `<dir>/.set-aside/` (never read), remove anything else.

        What can be neither removed nor moved (a directory with content) is remembered and skipped.
        """
        if not regular:
            try:
                os.rmdir(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
                return "removed"
            except FileNotFoundError:
                return "gone already"
            except OSError:
                pass
        aside = os.path.join(self.dir, SET_ASIDE)
        try:
            os.makedirs(aside, mode=0o700, exist_ok=True)
            target = os.path.join(aside, f"{name}.{time.time_ns()}")
            os.rename(path, target)
            return f"moved to {target}"
        except FileNotFoundError:
            return "gone already"
        except OSError as exc:
            self._ignored.add(name)
            return f"could not be moved aside ({exc.strerror}); skipped from now on"

    def _read_long_line(self, path: str, offset: int) -> bytes | None:
        """In a worker thread: the line at `offset` with its newline if it is at most max_record_bytes;
        b"" if it is longer; None if the file ends before its newline (still being written, or torn)."""
        fd, _ = _open_regular(path, self._allowed)
        try:
            data = os.pread(fd, self.ctx.max_record_bytes + 1, offset)
        finally:
            os.close(fd)
        nl = data.find(b"\n")
        if nl >= 0:
            return data[: nl + 1]
        return b"" if len(data) > self.ctx.max_record_bytes else None

    def _skip_long_line(self, path: str, offset: int, size: int) -> int:
        """Length up to and including the next newline (or the file's end) of a line over max_read_bytes."""
        fd, _ = _open_regular(path, self._allowed)
        try:
            pos = 0
            while offset + pos < size:
                block = os.pread(fd, 1 << 20, offset + pos)
                if not block:
                    break
                nl = block.find(b"\n")
                if nl >= 0:
                    return pos + nl + 1
                pos += len(block)
            return pos
        finally:
            os.close(fd)

    async def _remove(self, path: str, name: str) -> None:
        try:
            await anyio.to_thread.run_sync(os.unlink, path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.error("Cannot delete the finished spool file %s: %s.", path, exc.strerror)
                return
        self._committed.pop(name, None)
        self._read.pop(name, None)
        self._dirty = True
        self.counters.add("files_done")

    async def commit(self, mark: Any) -> None:
        """Advance a file's committed offset; persisted on the next pass and at close."""
        name, offset = mark
        if offset > self._committed.get(name, 0):
            self._committed[name] = offset
            self._dirty = True

    async def _persist(self) -> None:
        """Save the committed offsets (encoded here, written and fsynced in a worker thread)."""
        if not self._dirty:
            return
        data = orjson.dumps(self._committed)
        self._dirty = False
        try:
            await anyio.to_thread.run_sync(self._write_offsets, data)
        except OSError as exc:
            self._dirty = True
            log.error("Cannot save spool offsets to %s: %s.", self._offsets_path, exc.strerror)

    def _write_offsets(self, data: bytes) -> None:
        tmp = self._offsets_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._offsets_path)

    async def aclose(self) -> None:
        """Save the committed offsets. Idempotent."""
        await self._persist()
