"""Receiver `spool`: complete lines of the append-only NDJSON spool files that clients write (docs/transports.md).

Invariants:
- A line counts once its `\\n` is written; bytes after the last `\\n` are left for a later read.
- The committed offset of a file only advances once the pipeline says every record before it is in every
  exporter's hands; offsets live in `<state_dir>/spool/<receiver>.offsets.json`, replaced atomically. After
  a crash reading resumes at the committed offset, so records may come twice, never not at all.
- A writer holds `flock(LOCK_EX)` on its file for as long as it writes to it, and creates files under a
  dot-name before renaming them, so a file we can lock is finished. A finished file is deleted once it is
  read and committed to its end; a torn last line (the writer died mid-write) is counted as malformed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
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


def _writer_done(path: str) -> bool:
    """True when no writer holds the file's lock (it closed, rotated away, or died)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases our own lock too
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

    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status`: the directory and the unread bytes in it."""
        backlog = 0
        files = 0
        for name in self._names():
            try:
                backlog += os.path.getsize(os.path.join(self.dir, name)) - self._committed.get(name, 0)
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
            self._persist()
            if not delivered:
                await anyio.sleep(self.config.poll_interval)

    async def poll(self, deliver: Deliver) -> int:
        """One pass over the directory; returns how many bytes were delivered."""
        delivered = 0
        names = self._names()
        for name in names:
            delivered += await self._read_file(name, deliver)
        present = set(names)
        for gone in [n for n in self._committed if n not in present]:
            del self._committed[gone]
            self._read.pop(gone, None)
            self._dirty = True
        return delivered

    async def _read_file(self, name: str, deliver: Deliver) -> int:
        path = os.path.join(self.dir, name)
        offset = self._read.get(name, 0)
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            return 0
        if size < offset:  # truncated or replaced under us: start over, duplicates are allowed
            log.warning("Spool file %s shrank below its offset; reading it again from the start.", path)
            offset = self._read[name] = self._committed[name] = 0
        if size == offset:
            if self._committed.get(name, 0) == size and _writer_done(path):
                self._remove(path, name)
            return 0
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(min(size - offset, self.config.max_read_bytes))
        except OSError as exc:
            log.error("Cannot read spool file %s: %s.", path, exc.strerror)
            return 0
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) == self.config.max_read_bytes:
            # one line longer than a read: a record may be up to max_record_bytes, so read it whole
            long_line = self._read_long_line(path, offset)
            if long_line is None and not _writer_done(path):
                return 0  # a long line still being written
            if long_line:
                chunk, end = long_line, len(long_line)
            elif long_line == b"":  # over max_record_bytes: skip to its end, set aside its start
                end = self._skip_long_line(path, offset, size)
                reject = Reject("too_large", f"a line of {end} bytes in {name} is over max_record_bytes "
                                             f"({self.ctx.max_record_bytes})", chunk[:1024])
                self._read[name] = offset + end
                await deliver(Intake([], [reject], (name, offset + end), f"{self.ctx.name} {name}", end))
                return end
        if end == 0:
            if len(chunk) < self.config.max_read_bytes and not _writer_done(path):
                return 0  # a line still being written
            # the writer is gone (or a line longer than a read): the rest is a torn line
            end = len(chunk)
            if len(chunk) == self.config.max_read_bytes:
                end = self._skip_long_line(path, offset, size)
            reject = Reject("torn_line", f"incomplete last line of {name} ({end} bytes)", chunk[:1024])
            self._read[name] = offset + end
            await deliver(Intake([], [reject], (name, offset + end), f"{self.ctx.name} {name}", end))
            return end
        records, rejects = decode_payload(chunk[:end], self.ctx.max_record_bytes)
        self._read[name] = offset + end
        self.counters.add("received", len(records))
        await deliver(Intake(records, rejects, (name, offset + end), f"{self.ctx.name} {name}", end))
        return end

    def _read_long_line(self, path: str, offset: int) -> bytes | None:
        """The line at `offset` with its newline if it is at most max_record_bytes; b"" if it is longer;
        None if the file ends before its newline (still being written, or torn)."""
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(self.ctx.max_record_bytes + 1)
        nl = data.find(b"\n")
        if nl >= 0:
            return data[: nl + 1]
        return b"" if len(data) > self.ctx.max_record_bytes else None

    def _skip_long_line(self, path: str, offset: int, size: int) -> int:
        """Length up to and including the next newline (or the file's end) of a line over max_read_bytes."""
        with open(path, "rb") as f:
            f.seek(offset)
            pos = 0
            while offset + pos < size:
                block = f.read(1 << 20)
                if not block:
                    break
                nl = block.find(b"\n")
                if nl >= 0:
                    return pos + nl + 1
                pos += len(block)
        return pos

    def _remove(self, path: str, name: str) -> None:
        try:
            os.unlink(path)
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

    def _persist(self) -> None:
        if not self._dirty:
            return
        tmp = self._offsets_path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(self._committed))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._offsets_path)
            self._dirty = False
        except OSError as exc:
            log.error("Cannot save spool offsets to %s: %s.", self._offsets_path, exc.strerror)

    async def aclose(self) -> None:
        """Save the committed offsets. Idempotent."""
        self._persist()
