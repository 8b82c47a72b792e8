"""The durable queue: order, acknowledgement, recovery from corruption, bounds and their policies."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.errors import QueueBusyError
from shipper.queue import DiskQueue
from shipper.segment import HEADER, read_records
from shipper.settings import QueueConfig
from shipper.stats import Counters


def span(i: int, size: int = 0) -> dict:
    """A small record with a recognisable id and an optional payload of `size` bytes."""
    return {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "name": f"s{i}", "start_ns": 1,
            "end_ns": 2, "input": "x" * size}


def ids(items) -> list[str]:
    return [s["name"] for item in items for s in item.spans]


async def make(path: Path, counters: Counters | None = None, **queue) -> DiskQueue:
    q = DiskQueue(path, QueueConfig(**{"max_bytes": 1 << 20, **queue}), counters or Counters(),
                  record_spans=4, segment_bytes=2048)
    await q.open()
    return q


async def drain(q: DiskQueue) -> list[str]:
    """Take and acknowledge everything the queue holds; the names in order."""
    out: list[str] = []
    while q.readable():
        items = await q.take(100, 1 << 20, 0)
        out += ids(items)
        q.ack(items)
    return out


async def test_put_take_ack_keeps_order_and_splits_records(tmp_path: Path) -> None:
    """Spans come out in the order they went in, in records of at most `record_spans` spans."""
    q = await make(tmp_path)
    await q.put([span(i) for i in range(10)])
    items = await q.take(100, 1 << 20, 0)
    assert [len(item.spans) for item in items] == [4, 4, 2]
    assert ids(items) == [f"s{i}" for i in range(10)]
    q.ack(items)
    stats = q.statistics()
    assert stats["queue_items"] == 0 and stats["queue_bytes"] == 0
    await q.aclose()


async def test_take_respects_max_spans_and_max_bytes(tmp_path: Path) -> None:
    """A take gathers whole records up to the exporter's batch limits."""
    q = await make(tmp_path)
    for i in range(6):
        await q.put([span(i)])
    first = await q.take(4, 1 << 20, 0)
    assert ids(first) == ["s0", "s1", "s2", "s3"]
    q.ack(first)
    one = await q.take(100, 10, 0)  # max_bytes below one record: still one record per take
    assert ids(one) == ["s4"]
    await q.aclose()


async def test_unacknowledged_records_come_again_after_reopen(tmp_path: Path) -> None:
    """What was taken but not acknowledged is delivered again by the next process; acked records are not."""
    q = await make(tmp_path)
    await q.put([span(i) for i in range(8)])
    first = await q.take(4, 1 << 20, 0)
    q.ack(first)
    await q.take(4, 1 << 20, 0)  # in flight when the "process" dies
    await q.aclose()
    again = await make(tmp_path)
    assert again.statistics()["queue_items"] == 4
    assert await drain(again) == ["s4", "s5", "s6", "s7"]
    await again.aclose()


async def test_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    """Segments are removed once every record in them is acknowledged; the ack file tracks the position."""
    q = await make(tmp_path)
    for i in range(40):
        await q.put([span(i, 200)])
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert len(await drain(q)) == 40
    await q.put([span(99)])  # rolls past the full segment, which goes
    assert len(list(tmp_path.glob("*.seg"))) <= 2
    seq, offset = (int(x) for x in (tmp_path / "ack").read_text().split())
    assert (tmp_path / f"{seq:016d}.seg").exists() and offset >= 0
    await q.aclose()


async def test_corrupt_record_is_skipped_and_counted_at_recovery(tmp_path: Path) -> None:
    """A record with flipped bytes is skipped with a count; the records around it still come."""
    q = await make(tmp_path)
    for i in range(3):
        await q.put([span(i)])
    await q.aclose()
    segment = sorted(tmp_path.glob("*.seg"))[0]
    offsets = [offset for offset, _, _ in read_records(segment)]
    data = bytearray(segment.read_bytes())
    data[offsets[1] + HEADER.size + 5] ^= 0xFF  # inside the second record's payload
    segment.write_bytes(bytes(data))
    counters = Counters()
    again = await make(tmp_path, counters)
    assert counters.counts["queue_corrupt_records"] == 1
    assert counters.dropped["corrupt"] == 1
    assert await drain(again) == ["s0", "s2"]
    await again.aclose()


async def test_torn_tail_is_truncated_and_counted(tmp_path: Path) -> None:
    """A write cut short at the end of the last segment is cut off at start, not a crash."""
    q = await make(tmp_path)
    for i in range(3):
        await q.put([span(i)])
    await q.aclose()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    size = segment.stat().st_size
    os.truncate(segment, size - 7)
    counters = Counters()
    again = await make(tmp_path, counters)
    assert counters.counts["queue_torn_bytes"] > 0
    assert segment.stat().st_size < size - 7
    await again.put([span(3)])  # appends after the cut, readable
    assert await drain(again) == ["s0", "s1", "s3"]
    await again.aclose()


async def test_flipped_header_and_cut_tail_together(tmp_path: Path) -> None:
    """Garbage in a header (the length unreadable) is resynchronised on the next magic; a cut tail goes."""
    q = await make(tmp_path)
    for i in range(4):
        await q.put([span(i)])
    await q.aclose()
    segment = sorted(tmp_path.glob("*.seg"))[0]
    offsets = [offset for offset, _, _ in read_records(segment)]
    data = bytearray(segment.read_bytes())
    data[offsets[1] + 4: offsets[1] + 8] = b"\xff\xff\xff\xff"  # an absurd length
    segment.write_bytes(bytes(data[:-3]))
    counters = Counters()
    again = await make(tmp_path, counters)
    assert counters.counts["queue_corrupt_records"] == 1 and counters.counts["queue_torn_bytes"] > 0
    assert await drain(again) == ["s0", "s2"]
    await again.aclose()


async def test_drop_oldest_keeps_the_newest_within_max_bytes(tmp_path: Path) -> None:
    """Past max_bytes, the oldest records go, counted queue_full; the queue stays within its bound."""
    counters = Counters()
    q = await make(tmp_path, counters, max_bytes=4096, when_full="drop_oldest")
    for i in range(40):
        await q.put([span(i, 100)])
        assert q.statistics()["queue_bytes"] <= 4096
    names = await drain(q)
    assert names[-1] == "s39" and "s0" not in names
    assert counters.dropped["queue_full"] == 40 - len(names)
    await q.aclose()


async def test_drop_oldest_drops_an_in_flight_batch(tmp_path: Path) -> None:
    """A taken batch that drop_oldest drops is no longer pending, so its worker gives it up."""
    q = await make(tmp_path, max_bytes=2048, when_full="drop_oldest")
    await q.put([span(0, 100)])
    taken = await q.take(1, 1 << 20, 0)
    for i in range(1, 20):
        await q.put([span(i, 100)])
    assert q.pending(taken) == []
    q.ack(taken)  # a late ack of a dropped batch changes nothing
    names = await drain(q)
    assert names and names[-1] == "s19"
    await q.aclose()


async def test_drop_newest_keeps_the_oldest(tmp_path: Path) -> None:
    """Past max_bytes, drop_newest refuses the incoming records, counted queue_full."""
    counters = Counters()
    q = await make(tmp_path, counters, max_bytes=4096, when_full="drop_newest")
    for i in range(40):
        await q.put([span(i, 100)])
    names = await drain(q)
    assert names[0] == "s0" and "s39" not in names
    assert counters.dropped["queue_full"] == 40 - len(names)
    await q.aclose()


async def test_block_waits_for_an_acknowledgement(tmp_path: Path) -> None:
    """Under `block`, a put that does not fit waits until the consumer acknowledges, losing nothing."""
    counters = Counters()
    q = await make(tmp_path, counters, max_bytes=2048, when_full="block")
    done = anyio.Event()

    async def producer() -> None:
        for i in range(30):
            await q.put([span(i, 100)])
        done.set()

    got: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        while not (done.is_set() and not q.readable()):
            with anyio.move_on_after(0.5):
                items = await q.take(100, 1 << 20, 0)
                got += ids(items)
                q.ack(items)
    assert got == [f"s{i}" for i in range(30)]
    assert counters.counts["queue_blocked"] > 0 and not counters.dropped
    await q.aclose()


async def test_statistics_report_items_bytes_and_oldest_age(tmp_path: Path) -> None:
    """status figures: spans queued, their bytes, and how long the oldest has waited."""
    q = await make(tmp_path)
    await q.put([span(0), span(1)])
    figures = q.statistics()
    assert figures["queue_items"] == 2 and figures["queue_bytes"] > 0
    assert figures["queue_oldest_age_s"] is not None and figures["queue_oldest_age_s"] >= 0
    await q.aclose()


async def test_a_second_process_cannot_open_the_same_queue(tmp_path: Path) -> None:
    """The queue directory is locked: a second user gets QueueBusyError saying what to do."""
    q = await make(tmp_path)
    with pytest.raises(QueueBusyError, match="already using the queue"):
        await make(tmp_path)
    await q.aclose()
    await (await make(tmp_path)).aclose()


async def test_take_waits_for_max_delay_to_fill_a_batch(tmp_path: Path) -> None:
    """With fewer spans than max_spans queued, take waits (up to max_delay) for more to arrive."""
    q = await make(tmp_path)
    await q.put([span(0)])

    async def later() -> None:
        await anyio.sleep(0.05)
        await q.put([span(1)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        items = await q.take(2, 1 << 20, 5.0)
    assert ids(items) == ["s0", "s1"]
    await q.aclose()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["put", "take_ack", "take_rewind", "reopen"]), max_size=25))
def test_every_span_put_comes_out_at_least_once_in_order(tmp_path_factory, ops) -> None:
    """Whatever interleaving of puts, takes, acks and restarts: nothing is lost, and order holds."""
    path = tmp_path_factory.mktemp("q")

    async def run() -> None:
        q = await make(path)
        n = 0
        seen: list[int] = []
        for op in ops:
            if op == "put":
                await q.put([span(n), span(n + 1)])
                n += 2
            elif op in ("take_rewind", "take_ack") and q.readable():
                items = await q.take(3, 1 << 20, 0)
                seen += [int(s["name"][1:]) for s in (x for i in items for x in i.spans)]
                if op == "take_ack":
                    q.ack(items)
                else:
                    q.rewind()
            elif op == "reopen":
                await q.aclose()
                q = await make(path)
        rest = [int(name[1:]) for name in await drain(q)]
        await q.aclose()
        assert set(seen + rest) == set(range(n))
        assert rest == sorted(rest)

    anyio.run(run)


def test_a_failed_write_drops_the_record_with_a_count_and_keeps_the_segment_whole(tmp_path: Path) -> None:
    """When the disk refuses a write (here a file-size limit, as a full disk would), the record is dropped
    and counted `queue_write_error`; the segment is cut back, so what follows is read normally."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource, signal, anyio
        from pathlib import Path
        from shipper.settings import QueueConfig
        from shipper.queue import DiskQueue
        from shipper.stats import Counters

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
        async def main():
            counters = Counters()
            q = DiskQueue(Path({str(tmp_path)!r}), QueueConfig(max_bytes=1 << 20), counters,
                          segment_bytes=1 << 20)
            await q.open()
            await q.put([{{"name": "small"}}])
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
            await q.put([{{"name": "big", "input": "x" * 10000}}])
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            await q.put([{{"name": "after"}}])
            items = await q.take(10, 1 << 20, 0)
            print([s["name"] for i in items for s in i.spans], dict(counters.dropped))
            await q.aclose()
        anyio.run(main)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['small', 'after'] {'queue_write_error': 1}"


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
async def test_every_fsync_mode_keeps_records_across_a_reopen(tmp_path: Path, fsync: str) -> None:
    """Whatever the fsync policy, a record put and not acknowledged is there for the next process."""
    q = await make(tmp_path, fsync=fsync)
    async with anyio.create_task_group() as tg:
        tg.start_soon(q.run)  # the background fsync of `interval`; returns at once otherwise
        await q.put([span(0), span(1)])
        await q.sync()
        tg.cancel_scope.cancel()
    await q.aclose()
    again = await make(tmp_path, fsync=fsync)
    assert await drain(again) == ["s0", "s1"]
    await again.aclose()


async def test_a_worker_takes_the_records_just_put_without_decoding_them(tmp_path: Path) -> None:
    """What was just appended comes out as the very records put (no JSON decode); the payload on disk
    is the same spans; after a reopen, a rewind or past FRESH_BYTES they are decoded from disk, equal."""
    import orjson

    q = await make(tmp_path)
    batch = [span(i) for i in range(6)]
    await q.put(batch)
    items = await q.take(100, 1 << 20, 0)
    taken = [s for item in items for s in item.spans]
    assert all(a is b for a, b in zip(taken, batch, strict=True))
    assert [orjson.loads(line) for item in items for line in item.lines] == batch
    q.rewind()  # not acknowledged: handed out again, read from disk this time
    again = [s for item in await q.take(100, 1 << 20, 0) for s in item.spans]
    assert again == batch and not any(a is b for a, b in zip(again, batch))
    await q.aclose()
    q = await make(tmp_path)  # a restart: nothing in memory, everything from the segments
    assert await drain(q) == [f"s{i}" for i in range(6)]
    await q.aclose()


async def test_the_records_kept_for_the_worker_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FRESH_BYTES the oldest are forgotten (decoded from disk when taken); records dropped by
    drop_oldest are forgotten with them, and the rest come out equal, the newest as the objects put."""
    from shipper import queue as queue_module

    monkeypatch.setattr(queue_module, "FRESH_BYTES", 2000)  # three records of two 200-byte spans
    counters = Counters()
    q = await make(tmp_path, counters, max_bytes=2700, when_full="drop_oldest")  # eight such spans fit
    batches = [[span(4 * b + i, 200) for i in range(4)] for b in range(3)]
    for batch in batches:
        await q.put(batch)
        assert q._fresh_bytes <= 2000
    assert counters.snapshot()["dropped"] == {"queue_full": 4}
    taken = [s for item in await q.take(100, 1 << 20, 0) for s in item.spans]
    assert taken == batches[1] + batches[2]
    assert taken[-1] is batches[2][-1]  # kept: the object put
    assert taken[0] is not batches[1][0]  # forgotten: decoded from disk
    assert q._fresh == {} and q._fresh_bytes == 0
    await q.aclose()


async def test_a_forwarded_request_is_one_record_read_back_as_it_was_put(tmp_path: Path) -> None:
    """An OTLP request kept as it came: taken from memory just after the put, from the segment (checked)
    after a reopen, between NDJSON records in order, and decoded into records when asked for spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    message = ExportTraceServiceRequest()
    scope = message.resource_spans.add().scope_spans.add()
    for i in range(3):
        scope.spans.add(trace_id=bytes(15) + b"\x01", span_id=bytes(7) + bytes([i + 1]), name=f"f{i}",
                        start_time_unix_nano=1, end_time_unix_nano=2)
    body = message.SerializeToString()
    q = await make(tmp_path)
    await q.put([span(0)])
    await q.put_forwarded(body, 3)
    await q.put([span(1)])
    items = await q.take(100, 1 << 20, 0)
    assert [(item.forwarded, item.count) for item in items] == [(False, 1), (True, 3), (False, 1)]
    assert items[1].payload == body
    await q.aclose()
    q = await make(tmp_path)  # nothing acknowledged: all of it again, read from the segment
    again = await q.take(100, 1 << 20, 0)
    assert [item.payload for item in again][1] == body and again[1].forwarded
    assert [s["name"] for s in again[1].spans] == ["f0", "f1", "f2"]
    assert [orjson.loads(line)["name"] for line in again[1].ndjson.split(b"\n")] == ["f0", "f1", "f2"]
    q.ack(again)
    assert q.statistics()["queue_items"] == 0
    await q.aclose()
