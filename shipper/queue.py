"""An exporter's durable on-disk queue: append-only segments of checksummed records, an ack position.

Layout, under `<state_dir>/queues/<exporter>/`:

    lock                   flock(LOCK_EX) held by the one process using the queue (the daemon or a replay)
    ack                    "<segment> <offset>\\n": everything before this position is acknowledged or
                           dropped; replaced atomically (write a temporary file, rename)
    0000000000000001.seg   segments, named by a sequence number that only grows
    0000000000000002.seg   the last one is the one being appended to

A segment is a run of checksummed records, each written with one `write()` (the format and the scan that
recovery runs are in shipper/segment.py).

Invariants:
- Records are only appended; a segment is never rewritten, only truncated at recovery (a torn tail) or
  deleted once the ack position has moved past its end (and it is not the segment being appended to).
- The ack position only moves forward. It is written before the segments it passes are deleted, so a
  crash in between leaves at most a segment that recovery deletes. A stale ack file (power loss before the
  rename reached the disk) only makes records come again: at-least-once, never a loss.
- The bytes in the queue (`queue_bytes`: header and payload of every record from the ack position on)
  never exceed `max_bytes` after a `put` returns, except for one record larger than `max_bytes` accepted
  into an empty queue under `when_full: block`. Disk use is at most that plus the acknowledged part of the
  first segment and one segment of slack.
- A `put` returns once its records are in the segment file (and fsynced under `fsync: always`): that is
  when the pipeline may commit its receivers' marks.

Recovery (`open`): segments before the ack position are deleted; every record after it is checked. A
whole record whose checksum fails is skipped, and so is unreadable garbage up to the next valid record;
each is counted (`queue_corrupt_records`, dropped as `corrupt`, one per record since its span count
cannot be trusted). A record cut short at the end of the last segment (a write interrupted by a crash
or a power loss) is a torn tail: truncated and counted (`queue_torn_bytes`). What remains is delivered
again from the ack position.

A worker taking a record appended moments before gets its spans as they were put, not decoded again
from the payload (the last `FRESH_BYTES` of payload are kept so, by position; records are read-only
past the queue); a forwarded OTLP request (shipper.otlp.forward) just appended is handed over as the bytes
that were written, not read back and checked again. After a restart, a retry or a lag, records are read
from the segment and checked as always.

`fsync` (default `interval`): `always` fsyncs each append before `put` returns (in a worker thread,
survives power loss, costs a disk flush per batch); `interval` fsyncs dirty segments once a second in the
background (a `kill -9` loses nothing, the page cache survives it; a power loss may lose the last second);
`never` leaves it to the kernel. Appends themselves are small `write()`s done in the event loop thread.

`when_full` (default `drop_oldest`), when a record does not fit in `max_bytes`: `drop_oldest` drops the
oldest records (even one being exported: its worker gives it up at its next attempt), `drop_newest` drops
the incoming record, both counted `queue_full`; `block` makes `put` wait until the exporter acknowledges
enough. Under `block`, the pipeline (which puts every batch into every queue before taking the next)
waits for that one exporter: the other exporters get nothing new meanwhile, receivers stop reading, socket
clients fall back to their spool and the spool receiver leaves records on disk. Nothing is lost, but one
dead backend then holds up all of them: choose `block` only where loss is worse than delay.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import orjson

from shipper.errors import QueueBusyError
from shipper.otlp import forward
from shipper.record import MAX_RECORD_BYTES, Record
from shipper.segment import CRC_PART, HEADER, MAGIC, encode_record, resync, scan
from shipper.settings import QueueConfig
from shipper.stats import Counters

__all__ = ["DiskQueue", "Item", "QueueBusyError", "encode_lines"]

log = logging.getLogger("shipper.queue")

FSYNC_INTERVAL = 1.0
FRESH_BYTES = 1024 * 1024
"""Payload bytes of the records just appended whose spans a queue keeps as they were put (`_fresh`):
about two exporter batches. Decoded records take three to four times their JSON, and a worker stuck
retrying (a backend down) takes nothing: at 8 MiB the daemon's RSS grew by 33 MiB through the outage
benchmark, at this size it stays flat."""
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
MIN_SEGMENT_BYTES = 16 * 1024

Position = tuple[int, int]


class Item:
    """One queued record handed to a delivery worker: where it lives, its span count and its payload.

    `payload` is the record's NDJSON as stored; `spans` decodes it on first use (an exporter that sends
    the lines as they are, like `file`, never pays for it)."""

    __slots__ = ("position", "end", "size", "appended_ms", "count", "payload", "_spans", "_where")

    def __init__(self, position: Position, end: Position, size: int, appended_ms: int, count: int,
                 payload: bytes, where: object = "") -> None:
        self.position = position
        self.end = end
        self.size = size
        self.appended_ms = appended_ms
        self.count = count
        self.payload = payload
        self._spans: list[Record] | None = None
        self._where = where

    @property
    def forwarded(self) -> bool:
        """True when the payload is an OTLP request kept as it came (shipper.otlp.forward), not NDJSON."""
        return forward.is_forwarded(self.payload)

    @property
    def lines(self) -> list[bytes]:
        """The spans' NDJSON lines, as queued (a forwarded request's spans, decoded and encoded)."""
        if self.forwarded:
            return [orjson.dumps(span) for span in self.spans]
        return self.payload.split(b"\n") if self.payload else []

    @property
    def ndjson(self) -> bytes:
        """The spans as NDJSON lines joined by newlines: the payload, unless it is a forwarded request."""
        return b"\n".join(self.lines) if self.forwarded else self.payload

    @property
    def spans(self) -> list[Record]:
        """The spans as records (decoded once; shared between queues, see `_Decoded`)."""
        if self._spans is None and self.forwarded:
            self._spans, rejects = forward.decode(self.payload, MAX_RECORD_BYTES)
            if rejects:
                log.error("Queue %s: %d spans of a forwarded OTLP request in segment %d at offset %d are not "
                          "valid records (first: %s, %s); they are left out.", self._where, len(rejects),
                          self.position[0], self.position[1], rejects[0].reason, rejects[0].detail)
            return self._spans
        if self._spans is None:
            self._spans = DECODED.loads(self.lines)
            if len(self._spans) != self.count:
                log.error("Queue %s: a record in segment %d at offset %d holds %d spans, its header says %d.",
                          self._where, self.position[0], self.position[1], len(self._spans), self.count)
        return self._spans

    def __repr__(self) -> str:
        return f"Item({self.position}, {self.count} spans, {self.size} bytes)"


class _Decoded:
    """Records decoded from queued lines, kept by line while more than one queue is open.

    With several exporters every span is queued (the same line) in each queue; the first worker to take
    it decodes it, the others get that same record. Records are read-only past the queue (processors
    copy on write, exporters copy what they change), so sharing one is safe. Bounded: the oldest of the
    last `size` lines are forgotten first; a lagging exporter just decodes for itself."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.open_queues = 0
        self._records: OrderedDict[bytes, Record] = OrderedDict()

    def loads(self, lines: list[bytes]) -> list[Record]:
        loads = orjson.loads
        if self.open_queues < 2:
            if self._records:
                self._records.clear()
            return [loads(line) for line in lines]
        records, size = self._records, self.size
        out = []
        for line in lines:
            rec = records.get(line)
            if rec is None:
                rec = loads(line)
                if len(records) >= size:
                    records.popitem(last=False)
                records[line] = rec
            out.append(rec)
        return out


DECODED = _Decoded()


def encode_lines(spans: list[Record]) -> list[bytes] | None:
    """Each span as one orjson line, for `DiskQueue.put(lines=...)`; None if one cannot be encoded."""
    dumps = orjson.dumps
    try:
        return [dumps(span) for span in spans]
    except TypeError:
        return None


class DiskQueue:
    """A bounded, durable FIFO of span batches for one exporter, with one consumer."""

    def __init__(self, directory: Path, config: QueueConfig, counters: Counters, *,
                 record_spans: int = 512, record_bytes: int = 4 * 1024 * 1024,
                 segment_bytes: int | None = None) -> None:
        self.dir = Path(directory)
        self._ack_path, self._ack_tmp = str(self.dir / "ack"), str(self.dir / "ack.tmp")
        self.config = config
        self.counters = counters
        self.record_spans = max(1, record_spans)
        self.record_bytes = max(1, min(record_bytes, config.max_bytes // 4))
        self.segment_bytes = segment_bytes or min(MAX_SEGMENT_BYTES, max(MIN_SEGMENT_BYTES, config.max_bytes // 8))
        self._lock_fd: int | None = None
        self._fds: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._segments: list[int] = []
        self._verified: dict[int, int] = {}
        self._head: Position = (0, 0)
        self._read: Position = (0, 0)
        self._written_ack: Position | None = None
        self._dirty: set[int] = set()
        self._live_bytes = 0
        self._live_items = 0
        self._appended = anyio.Event()
        self._freed = anyio.Event()
        self._closed = True
        # The spans of the records just appended, as they were put (or a forwarded request's bytes), by
        # position: the worker that takes such a record (usually moments later) gets them without
        # decoding (or reading back) its payload again. Records are
        # read-only past the queue, so these are the very records it holds; bounded by FRESH_BYTES
        # (oldest first), popped when taken, so a lagging or retrying worker decodes as before.
        self._fresh: OrderedDict[Position, tuple[list[Record] | bytes, int]] = OrderedDict()  # (spans, payload bytes)
        self._fresh_bytes = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Lock the directory, recover what a previous run left, and be ready to append."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise QueueBusyError(f"another shipper daemon (or a `shipper replay`) is already using the queue "
                                 f"{self.dir}; stop it first, or give this one its own state_dir") from exc
        self._lock_fd = fd
        self._closed = False
        DECODED.open_queues += 1
        self._recover()

    def _recover(self) -> None:
        ack = self._read_ack()
        names = sorted(p.name for p in self.dir.glob("*.seg"))
        seqs = [int(n[:-4]) for n in names if n[:-4].isdigit()]
        for seq in seqs:
            if seq < ack[0]:
                self._unlink(seq)
        self._segments = [s for s in seqs if s >= ack[0]]
        if not self._segments:
            self._segments = [max(ack[0], 0) + 1]
            self._open_segment(self._segments[0], create=True)
            self._head = self._read = (self._segments[0], 0)
            self._write_ack()
            return
        head = ack if ack[0] == self._segments[0] else (self._segments[0], 0)
        corrupt = torn = 0
        for seq in self._segments:
            self._open_segment(seq)
            size = os.fstat(self._fds[seq]).st_size
            start = head[1] if seq == head[0] else 0
            if start > size:
                log.warning("The ack position of queue %s is past the end of segment %d; starting that "
                            "segment over (records may come twice).", self.dir, seq)
                start = 0
                head = (seq, 0)
            valid_end = start
            if size > start:
                with mmap.mmap(self._fds[seq], size, access=mmap.ACCESS_READ) as buf:
                    found = scan(buf, start, size, last=seq == self._segments[-1])
                self._live_bytes += found.live_bytes
                self._live_items += found.spans
                corrupt += found.corrupt
                torn += found.torn
                valid_end = found.valid_end
            if valid_end < size and seq == self._segments[-1]:
                os.ftruncate(self._fds[seq], valid_end)
                size = valid_end
            self._ends[seq] = size
            self._verified[seq] = size
        self._head = self._read = self._normalize(head)
        self._write_ack()
        if corrupt:
            self.counters.add("queue_corrupt_records", corrupt)
            self.counters.drop("corrupt", corrupt)
        if torn:
            self.counters.add("queue_torn_bytes", torn)
        if corrupt or torn:
            log.warning("Recovered queue %s: skipped %d corrupt records and cut %d bytes of a torn tail; "
                        "%d spans remain to deliver.", self.dir, corrupt, torn, self._live_items)
        elif self._live_items:
            log.info("Queue %s holds %d spans (%d bytes) from the last run; delivering them again.",
                     self.dir, self._live_items, self._live_bytes)

    def _read_ack(self) -> Position:
        try:
            text = (self.dir / "ack").read_text()
            seq, offset = (int(part) for part in text.split())
            return seq, offset
        except FileNotFoundError:
            return (0, 0)
        except (ValueError, OSError):
            log.error("The ack file of queue %s is unreadable; delivering every record in it again.", self.dir)
            return (0, 0)

    def _write_ack(self) -> None:
        if self._written_ack == self._head:
            return
        tmp = self._ack_tmp
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)  # os-level: no text-file layers
        try:
            os.write(fd, f"{self._head[0]} {self._head[1]}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, self._ack_path)
        self._written_ack = self._head

    def _open_segment(self, seq: int, create: bool = False) -> None:
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fds[seq] = os.open(self.dir / f"{seq:016d}.seg", flags, 0o640)
        if create:
            self._ends[seq] = 0
            self._verified[seq] = 0

    def _unlink(self, seq: int) -> None:
        fd = self._fds.pop(seq, None)
        if fd is not None:
            os.close(fd)
        self._ends.pop(seq, None)
        self._verified.pop(seq, None)
        self._dirty.discard(seq)
        try:
            os.unlink(self.dir / f"{seq:016d}.seg")
        except FileNotFoundError:
            pass

    async def aclose(self) -> None:
        """Flush to disk and release the directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        DECODED.open_queues -= 1
        self._fresh.clear()
        self._fresh_bytes = 0
        self._write_ack()
        if self.config.fsync != "never":
            for seq in list(self._dirty):
                os.fsync(self._fds[seq])
        self._dirty.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def run(self) -> None:
        """Background fsync of dirty segments under `fsync: interval`; returns at once otherwise."""
        if self.config.fsync != "interval":
            return
        while True:
            await anyio.sleep(FSYNC_INTERVAL)
            await self.sync()

    async def sync(self) -> None:
        """fsync every segment written since the last sync (in a worker thread)."""
        dirty = [os.dup(self._fds[seq]) for seq in self._dirty if seq in self._fds]
        self._dirty.clear()
        if dirty:  # duplicates, so a segment deleted meanwhile cannot close the fd under the thread
            await anyio.to_thread.run_sync(_fsync_all, dirty)

    # -- producing ----------------------------------------------------------------------------------

    async def put(self, spans: list[Record], lines: list[bytes] | None = None) -> None:
        """Append `spans` as one or more records; returns once they are in the segment file.

        `lines`, when given, are the spans already encoded (`encode_lines`): the pipeline encodes a batch
        once for every exporter whose own processors cannot change it."""
        now = int(time.time() * 1000)
        if lines is None:
            spans, lines = self._encoded(spans)
        for start, end in self._chunks(lines):
            await self._put_record(b"\n".join(lines[start:end]), end - start, now, spans[start:end])
        if self.config.fsync == "always" and self._dirty:
            await self.sync()

    async def put_forwarded(self, body: bytes, count: int) -> None:
        """Append an OTLP request of `count` spans as one record, its payload the request as it came
        (shipper.otlp.forward); returns once it is in the segment file."""
        await self._put_record(body, count, int(time.time() * 1000), body)
        if self.config.fsync == "always" and self._dirty:
            await self.sync()

    async def _put_record(self, payload: bytes, count: int, now: int, kept: list[Record] | bytes) -> None:
        """Append one record when `when_full` lets it in, keeping `kept` (its spans, or a forwarded
        request's bytes) for the worker that takes it next (`_fresh`)."""
        record = encode_record(payload, count, now)
        if not await self._make_room(len(record), count):
            return
        position = self._append(record, count)
        if position is not None:
            self._keep_fresh(position, kept, len(payload))

    def _encoded(self, spans: list[Record]) -> tuple[list[Record], list[bytes]]:
        """(the spans that JSON can hold, their lines); the others are dropped as `unencodable`."""
        dumps = orjson.dumps
        try:
            return spans, [dumps(span) for span in spans]
        except TypeError:
            pass
        kept: list[Record] = []
        lines: list[bytes] = []
        for span in spans:
            try:
                lines.append(dumps(span))
            except TypeError:
                self.counters.drop("unencodable")
                continue
            kept.append(span)
        return kept, lines

    def _chunks(self, lines: list[bytes]) -> Iterable[tuple[int, int]]:
        """(start, end) of each run of `lines` that makes one record (within record_spans and record_bytes)."""
        if len(lines) <= self.record_spans and sum(map(len, lines)) + len(lines) <= self.record_bytes:
            if lines:
                yield 0, len(lines)
            return
        start = size = 0
        for i, line in enumerate(lines):
            if i > start and (i - start >= self.record_spans or size + len(line) + 1 > self.record_bytes):
                yield start, i
                start, size = i, 0
            size += len(line) + 1
        if start < len(lines):
            yield start, len(lines)

    def _keep_fresh(self, position: Position, spans: list[Record] | bytes, size: int) -> None:
        if size > FRESH_BYTES:
            return
        fresh = self._fresh
        fresh[position] = (spans, size)
        self._fresh_bytes += size
        while self._fresh_bytes > FRESH_BYTES:
            self._fresh_bytes -= fresh.popitem(last=False)[1][1]

    def _take_fresh(self, position: Position) -> list[Record] | bytes | None:
        kept = self._fresh.pop(position, None)
        if kept is None:
            return None
        self._fresh_bytes -= kept[1]
        return kept[0]

    async def _make_room(self, size: int, count: int) -> bool:
        limit = self.config.max_bytes
        policy = self.config.when_full
        if self._live_bytes + size <= limit:
            return True
        if policy == "drop_newest" or (policy == "drop_oldest" and size > limit):
            self.counters.drop("queue_full", count)
            return False
        if policy == "drop_oldest":
            while self._live_bytes + size > limit and self._drop_head():
                pass
            return True
        while self._live_bytes and self._live_bytes + size > limit:
            self.counters.add("queue_blocked")
            await self._freed.wait()
            self._freed = anyio.Event()
        return True

    def _append(self, record: bytes, count: int) -> Position | None:
        """Write one record at the end of the last segment; its position, or None if it could not be."""
        seq = self._segments[-1]
        try:
            if self._ends[seq] >= self.segment_bytes:
                self._open_segment(seq + 1, create=True)
                seq = seq + 1
                self._segments.append(seq)
                if self.config.fsync != "never":
                    self._dirty.add(seq - 1)
                if self._head == (seq - 1, self._ends[seq - 1]):  # all of the full one is acknowledged
                    self._advance(self._head)
            fd = self._fds[seq]
            position = (seq, self._ends[seq])
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:  # disk full, quota, I/O error: drop this record, keep the file whole
            try:
                os.ftruncate(self._fds[seq], self._ends[seq])
            except OSError:
                pass  # a partial record left behind is skipped as corrupt by the reader
            self.counters.drop("queue_write_error", count)
            self.counters.last_error = f"cannot write to the queue {self.dir}: {exc.strerror or exc}"
            log.error("Cannot append %d spans to the queue %s: %s; they are dropped. Free disk space or "
                      "fix the state directory.", count, self.dir, exc.strerror or exc)
            return None
        self._ends[seq] += len(record)
        self._dirty.add(seq)
        self._live_bytes += len(record)
        self._live_items += count
        self.counters.add("queued", count)
        self._appended.set()
        return position

    # -- consuming ----------------------------------------------------------------------------------

    def _normalize(self, pos: Position) -> Position:
        """The same position, moved past ended segments to the start of the next one that exists."""
        seq, offset = pos
        if seq not in self._ends:
            later = [s for s in self._segments if s > seq]
            if not later:
                return self._segments[-1], self._ends[self._segments[-1]]
            seq, offset = later[0], 0
        i = self._segments.index(seq)
        while offset >= self._ends[seq] and i + 1 < len(self._segments):
            i += 1
            seq, offset = self._segments[i], 0
        return seq, offset

    def _header_at(self, pos: Position, verify: bool = False) -> tuple[Position, int, int, int, bytes] | None:
        """(position, size, count, appended_ms, payload) of the first valid record at or after `pos`, else
        None; the payload is read and checked only with `verify`, else it is b""."""
        seq, offset = self._normalize(pos)
        while True:
            end = self._ends.get(seq, 0)
            if offset < end:
                head = os.pread(self._fds[seq], HEADER.size, offset)
                magic, length, count, appended_ms, crc = HEADER.unpack(head) if len(head) == HEADER.size \
                    else (b"", 0, 0, 0, 0)
                if magic == MAGIC and offset + HEADER.size + length <= end:
                    if not verify:
                        return (seq, offset), HEADER.size + length, count, appended_ms, b""
                    payload = os.pread(self._fds[seq], length, offset + HEADER.size)
                    if zlib.crc32(payload, zlib.crc32(head[CRC_PART])) == crc:
                        return (seq, offset), HEADER.size + length, count, appended_ms, payload
                offset = self._skip_corrupt(seq, offset, end)
                continue
            nxt = self._normalize((seq, offset))
            if nxt == (seq, offset):
                return None
            seq, offset = nxt

    def _skip_corrupt(self, seq: int, offset: int, end: int) -> int:
        with mmap.mmap(self._fds[seq], end, access=mmap.ACCESS_READ) as buf:
            nxt = resync(buf, offset, end)
        if offset >= self._verified.get(seq, 0):  # recovery did not count this one
            log.error("Queue %s: a record in segment %d at offset %d fails its checksum; skipped it.",
                      self.dir, seq, offset)
            self.counters.add("queue_corrupt_records")
            self.counters.drop("corrupt")
        return nxt

    def _read_item(self, pos: Position) -> Item | None:
        if self._fresh and type(self._fresh.get(pos, (None,))[0]) is bytes:  # a forwarded request just put
            found = self._header_at(pos)
            if found is not None and found[0] == pos:
                size, count, appended_ms = found[1:4]
                body = self._take_fresh(pos)
                assert isinstance(body, bytes)
                return Item(pos, (pos[0], pos[1] + size), size, appended_ms, count, body, self.dir)
        found = self._header_at(pos, verify=True)
        if found is None:
            return None
        (seq, offset), size, count, appended_ms, payload = found
        item = Item((seq, offset), (seq, offset + size), size, appended_ms, count, payload, self.dir)
        if self._fresh:
            spans = self._take_fresh((seq, offset))
            if type(spans) is list and len(spans) == count:
                item._spans = spans
        return item

    async def take(self, max_spans: int, max_bytes: int, max_delay: float) -> list[Item]:
        """Wait for at least one record, then gather more while within the limits or until `max_delay`
        after the first was appended. Records stay in the queue until `ack`."""
        while True:
            first = self._read_item(self._read)
            if first is not None:
                break
            self._appended = anyio.Event()
            await self._appended.wait()
        items = [first]
        self._read = first.end
        spans, size = first.count, first.size
        deadline = first.appended_ms / 1000 + max_delay
        while spans < max_spans and size < max_bytes:
            item = self._read_item(self._read)
            if item is None:
                remaining = deadline - time.time()
                if remaining <= 0:
                    break
                self._appended = anyio.Event()
                with anyio.move_on_after(remaining):
                    await self._appended.wait()
                continue
            if spans + item.count > max_spans or size + item.size > max_bytes:
                break
            items.append(item)
            self._read = item.end
            spans += item.count
            size += item.size
        return items

    def readable(self) -> bool:
        """True when a record waits to be taken."""
        return self._header_at(self._read) is not None

    def pending(self, items: list[Item]) -> list[Item]:
        """Those of `items` not dropped (by `drop_oldest`) since they were taken."""
        return [item for item in items if item.position >= self._head]

    def ack(self, items: list[Item]) -> None:
        """Acknowledge `items` (exported, or dead-lettered): they will not be delivered again."""
        for item in self.pending(items):
            self._live_bytes -= item.size
            self._live_items -= item.count
        if items and items[-1].end > self._head:
            self._advance(items[-1].end)

    def rewind(self) -> None:
        """Hand out again, from the ack position, what was taken but not acknowledged."""
        self._read = self._head

    def _drop_head(self) -> bool:
        found = self._header_at(self._head, verify=True)  # a checked count: corrupt ones were never live
        if found is None:
            return False
        (seq, offset), size, count, _, _ = found
        self._live_bytes -= size
        self._live_items -= count
        self.counters.drop("queue_full", count)
        self._advance((seq, offset + size))
        return True

    def _advance(self, pos: Position) -> None:
        self._head = self._normalize(pos)
        self._read = max(self._read, self._head)
        for position in [p for p in self._fresh if p < self._head]:  # dropped (drop_oldest) before taken
            self._take_fresh(position)
        self._write_ack()
        while self._segments[0] < self._head[0]:
            self._unlink(self._segments.pop(0))
        self._freed.set()

    # -- figures ------------------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Items, bytes and the age of the oldest record still to deliver."""
        oldest = None
        if self._live_items and not self._closed:
            found = self._header_at(self._head)
            if found is not None:
                oldest = round(max(0.0, time.time() - found[3] / 1000), 3)
        return {
            "queue_items": self._live_items,
            "queue_bytes": self._live_bytes,
            "queue_oldest_age_s": oldest,
            "queue_segments": len(self._segments),
            "queue_max_bytes": self.config.max_bytes,
        }


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as exc:
            log.error("fsync of a queue segment failed: %s.", exc.strerror)
        finally:
            os.close(fd)
