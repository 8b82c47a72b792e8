"""Exporter `file`: the records as received, after processing, as NDJSON, rotated by size.

The delivery worker hands it the queue's NDJSON payloads (`export_ndjson`), written as they are: the
queue stores each span as the same orjson line `export` would write.

The current file is `path`; past `max_bytes` it is renamed `path.1` (older ones shift to `.2` ...) and
at most `max_files` rotated files are kept. Each batch is written with one `write()`, so a reader never
sees half a batch from a live daemon; `fsync: true` also survives power loss, at a cost per batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson

from shipper.component import Context
from shipper.errors import RetryableExportError
from shipper.record import Record
from shipper.settings import ExporterCommon
from shipper.values import ByteSize

__all__ = ["FileExporter"]


@dataclass(kw_only=True)
class Config(ExporterCommon):
    """Where to write and when to rotate; `path` defaults to `<state_dir>/spans/spans.ndjson`."""

    path: str = ""
    max_bytes: ByteSize = field(default=100 * 1024 * 1024, metadata={"min": 1024})
    max_files: int = field(default=5, metadata={"min": 0})
    fsync: bool = False


class FileExporter:
    """Appends batches to an NDJSON file."""

    Config = Config

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.path = Path(config.path) if config.path else ctx.state_dir / "spans" / "spans.ndjson"
        self._fd: int | None = None
        self._size = 0
        self._lock = anyio.Lock()

    def statistics(self) -> dict[str, Any]:
        """Live figures for `shipper status`."""
        return {"path": str(self.path), "file_bytes": self._size}

    async def open(self) -> None:
        """Create the directory and open the current file for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open_current()

    def _open_current(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        keep = self.config.max_files
        for i in range(keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if i == keep:
                older.unlink(missing_ok=True)
            else:
                newer_target = self.path.with_name(f"{self.path.name}.{i + 1}")
                if older.exists():
                    older.rename(newer_target)
        if keep:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open_current()

    async def export(self, batch: list[Record]) -> None:
        """Write the batch as NDJSON lines in one write."""
        if not batch:
            return
        await self._write(b"\n".join(map(orjson.dumps, batch)) + b"\n")

    async def export_ndjson(self, payloads: list[bytes], count: int) -> None:
        """Write queued NDJSON payloads (each a run of orjson lines, as `export` would write them) as they
        are: the delivery worker hands them over undecoded, so a span is never decoded to be re-encoded."""
        payloads = [p for p in payloads if p]
        if payloads:
            await self._write(b"\n".join(payloads) + b"\n")

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            try:
                if self._fd is None:
                    self._open_current()
                if self._size and self._size + len(data) > self.config.max_bytes:
                    self._rotate()
                assert self._fd is not None
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                if self.config.fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                raise RetryableExportError(f"cannot write {self.path}: {exc.strerror}") from exc
            self._size += len(data)

    async def aclose(self) -> None:
        """Close the file. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
