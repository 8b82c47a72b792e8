"""One queue segment file: the record format, and reading it back (recovery, replay tools, tests).

A segment is a run of records, each written with one `write()`:

    offset  size  field (integers big-endian)
    0       4     magic b"SHQ1"
    4       4     payload length L
    8       4     span count N
    12      8     appended at, Unix epoch milliseconds
    20      4     crc32 (zlib) of bytes 4..20 followed by the payload
    24      L     the payload: N span records as orjson NDJSON lines joined by b"\\n" (no final newline),
                  or an OTLP ExportTraceServiceRequest of N spans kept as it came (it starts with 0x0A,
                  NDJSON with `{`: shipper.otlp.forward, docs/forwarding.md)

`scan` is what recovery runs over a segment (shipper/queue.py says what it does with the result): a whole
record whose checksum fails is skipped, and so is unreadable garbage up to the next valid record; a record
cut short at the end of the last segment is a torn tail.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["CRC_PART", "HEADER", "MAGIC", "Scan", "encode_record", "read_records", "resync", "scan"]

MAGIC = b"SHQ1"
HEADER = struct.Struct(">4sIIQI")
CRC_PART = slice(4, 20)
"""The header bytes the checksum covers, before the payload."""


def encode_record(payload: bytes, count: int, appended_ms: int) -> bytes:
    """Header and payload of one queue record."""
    head = HEADER.pack(MAGIC, len(payload), count, appended_ms, 0)
    crc = zlib.crc32(payload, zlib.crc32(head[CRC_PART]))
    return head[:20] + crc.to_bytes(4, "big") + payload


def _check(buf: Any, offset: int, end: int) -> tuple[int, int, int] | None:
    """(record size, span count, appended_ms) if a valid record starts at `offset` of `buf`, else None."""
    if end - offset < HEADER.size:
        return None
    magic, length, count, appended_ms, crc = HEADER.unpack_from(buf, offset)
    if magic != MAGIC or offset + HEADER.size + length > end:
        return None
    view = memoryview(buf)[offset + HEADER.size: offset + HEADER.size + length]
    try:
        ok = zlib.crc32(view, zlib.crc32(bytes(buf[offset + 4: offset + 20]))) == crc
    finally:
        view.release()
    return (HEADER.size + length, count, appended_ms) if ok else None


def resync(buf: Any, offset: int, end: int) -> int:
    """The offset of the next valid record after `offset`, or `end` if there is none."""
    at: int = offset
    while True:
        at = buf.find(MAGIC, at + 1, end)
        if at < 0:
            return end
        if _check(buf, at, end) is not None:
            return at


def _next_after_bad(buf: Any, offset: int, end: int) -> int | None:
    """Where to go on from an invalid record at `offset`: past it when it is whole (its checksum failed),
    else the next valid record; None when nothing valid follows and the record is not whole (torn)."""
    if end - offset >= HEADER.size:
        magic, length = struct.unpack_from(">4sI", buf, offset)
        after: int = offset + HEADER.size + length
        if magic == MAGIC and after <= end and (after == end or buf[after:after + 4] == MAGIC):
            return after
    nxt = resync(buf, offset, end)
    return None if nxt == end else nxt


def read_records(path: str | os.PathLike[str]) -> Iterable[tuple[int, int, bytes | None]]:
    """(offset, span count, payload) of each record of a segment file; payload None for a corrupt run."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        found = _check(data, offset, len(data))
        if found is None:
            yield offset, 0, None
            offset = resync(data, offset, len(data))
            continue
        size, count, _ = found
        yield offset, count, data[offset + HEADER.size: offset + size]
        offset += size


@dataclass(frozen=True, slots=True)
class Scan:
    """What a segment holds from a start offset: valid bytes and spans, where the valid part ends, and
    how many corrupt records and torn-tail bytes were found."""

    live_bytes: int
    spans: int
    valid_end: int
    corrupt: int
    torn: int


def scan(buf: Any, start: int, size: int, last: bool) -> Scan:
    """Check every record of `buf[start:size]`; in the `last` segment an incomplete record is a torn tail."""
    live_bytes = spans = corrupt = torn = 0
    valid_end = offset = start
    while offset < size:
        found = _check(buf, offset, size)
        if found is None:
            nxt = _next_after_bad(buf, offset, size)
            if nxt is None and last:
                torn += size - offset
                break
            corrupt += 1
            offset = size if nxt is None else nxt
            valid_end = offset
            continue
        record_size, count, _ = found
        live_bytes += record_size
        spans += count
        offset += record_size
        valid_end = offset
    return Scan(live_bytes, spans, valid_end, corrupt, torn)
