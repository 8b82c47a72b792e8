"""Batches from a stream: whichever of item count, bytes or delay since the first item comes first.

`batches()` drains what is already waiting without awaiting (cheap under load), waits with a deadline
only when the stream is empty, and yields an empty batch every `idle_tick` seconds of silence so its
consumer can run timers (tail-sampling decisions) without a second task. A batch holding an item someone
waits on (`waited(item)`: an OTLP sender expecting its answer) is yielded once the stream is empty, without
waiting for more: the sender's next request cannot come before that answer, so waiting would only add
`max_delay` to every request it sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

__all__ = ["batches"]

T = TypeVar("T")


async def batches(
    stream: MemoryObjectReceiveStream[T],
    *,
    max_items: int,
    max_bytes: int,
    max_delay: float,
    size_of: Callable[[T], tuple[int, int]],
    idle_tick: float | None = None,
    waited: Callable[[T], bool] | None = None,
) -> AsyncIterator[list[T]]:
    """Yield lists of stream items; `size_of(item)` gives its (count, bytes). Ends when the stream closes."""
    while True:
        got = False
        try:
            with anyio.move_on_after(idle_tick if idle_tick is not None else float("inf")):
                first = await stream.receive()
                got = True
        except anyio.EndOfStream:
            return
        if not got:
            yield []
            continue
        batch: list[T] = [first]
        count, size = size_of(first)
        urgent = waited is not None and waited(first)
        deadline = anyio.current_time() + max_delay
        ended = False
        while count < max_items and size < max_bytes:
            try:
                item = stream.receive_nowait()
            except anyio.EndOfStream:
                ended = True
                break
            except anyio.WouldBlock:
                if urgent:
                    break
                item, ended = await _receive_until(stream, deadline)
                if item is _NOTHING:
                    break
            if waited is not None and not urgent:
                urgent = waited(item)
            batch.append(item)
            n, b = size_of(item)
            count += n
            size += b
        yield batch
        if ended:
            return


_NOTHING: Any = object()


async def _receive_until(stream: MemoryObjectReceiveStream[T], deadline: float) -> tuple[Any, bool]:
    """The next item if one comes before `deadline`, else `_NOTHING`; and whether the stream ended."""
    remaining = deadline - anyio.current_time()
    if remaining <= 0:
        return _NOTHING, False
    with anyio.move_on_after(remaining):
        try:
            return await stream.receive(), False
        except anyio.EndOfStream:
            return _NOTHING, True
    return _NOTHING, False
