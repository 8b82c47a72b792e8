"""batches(): whichever of count, bytes or delay comes first; idle ticks; the end of the stream."""

from __future__ import annotations

import anyio
import pytest

from shipper.batching import batches

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sizes(item: int) -> tuple[int, int]:
    return 1, item


async def collect(items: list[int], **limits) -> list[list[int]]:
    send, receive = anyio.create_memory_object_stream[int](100)
    for item in items:
        send.send_nowait(item)
    send.close()
    return [batch async for batch in batches(receive, size_of=sizes, **limits)]


async def test_count_cap_splits_batches() -> None:
    """Seven waiting items with max_items 3 come as 3, 3, 1, and the stream's end ends the batches."""
    assert await collect(list(range(7)), max_items=3, max_bytes=1 << 20, max_delay=1) == [[0, 1, 2], [3, 4, 5], [6]]


async def test_byte_cap_closes_a_batch_once_reached() -> None:
    """A batch closes as soon as its bytes reach max_bytes."""
    assert await collect([40, 40, 40, 10], max_items=100, max_bytes=80, max_delay=1) == [[40, 40], [40, 10]]


async def test_delay_closes_a_partial_batch_and_idle_ticks_are_empty() -> None:
    """An item alone is yielded after max_delay; silence yields empty batches every idle_tick."""
    send, receive = anyio.create_memory_object_stream[int](10)
    seen: list[list[int]] = []
    async with anyio.create_task_group() as tg:
        async def consume() -> None:
            async for batch in batches(receive, max_items=10, max_bytes=1 << 20, max_delay=0.05, size_of=sizes,
                                       idle_tick=0.05):
                seen.append(batch)
                if len(seen) >= 3:
                    tg.cancel_scope.cancel()
        tg.start_soon(consume)
        await send.send(5)
    assert seen[0] == [5]
    assert seen[1:] == [[], []]


async def test_a_waited_item_goes_without_waiting_for_more() -> None:
    """An item a sender waits on (an OTLP request) is yielded with what is already waiting, not after
    max_delay; items nobody waits on still wait for company."""
    send, receive = anyio.create_memory_object_stream[int](10)
    seen: list[list[int]] = []
    async with anyio.create_task_group() as tg:
        async def consume() -> None:
            async for batch in batches(receive, max_items=10, max_bytes=1 << 20, max_delay=30, size_of=sizes,
                                       waited=lambda item: item % 2 == 1):
                seen.append(batch)
                if len(seen) == 2:
                    tg.cancel_scope.cancel()
        send.send_nowait(2)
        send.send_nowait(3)  # waited on: the batch [2, 3] goes as soon as the stream is empty
        tg.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        await anyio.sleep(0.05)
        await send.send(4)  # nobody waits on it: held for max_delay (30 s), until 5 comes, which is waited on
        await anyio.sleep(0.05)
        assert len(seen) == 1
        await send.send(5)
    assert seen == [[2, 3], [4, 5]]
