"""Async tasks and thread-pool work: spans made concurrently still nest under the span that started them.

asyncio tasks inherit the context; `shipper.TracedThreadPoolExecutor` carries it into worker threads.
Run with the daemon up (`shipper run`): python examples/async_and_threads.py
"""

from __future__ import annotations

import asyncio

import shipper


@shipper.traced(kind="tool")
async def fetch(i: int) -> int:
    await asyncio.sleep(0.01)
    return i * i


@shipper.traced(kind="task")
def crunch(i: int) -> int:
    return sum(range(i * 1000))


@shipper.traced(kind="chain")
async def fan_out() -> list[int]:
    return await asyncio.gather(*(fetch(i) for i in range(3)))


@shipper.traced(kind="chain")
def thread_pool() -> list[int]:
    with shipper.TracedThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(crunch, range(3)))


async def main() -> str:
    async with shipper.span("async-and-threads", kind="chain") as root:
        await fan_out()
        await asyncio.to_thread(thread_pool)  # to_thread copies the context too
    return root.trace_id


if __name__ == "__main__":
    print(f"trace_id={asyncio.run(main())}")
