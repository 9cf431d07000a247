"""Tasks that Fast.resolve wakes directly and that re-enter the producer mid-batch."""

from __future__ import annotations

import asyncio

import pytest

from kpush import KafkaError
from kpush.aio import Producer


async def test_woken_task_closes_producer_mid_batch(broker):
    # The first task woken (during Fast.resolve, with the rest of the batch
    # still to resolve) closes the producer: every other send still ends,
    # with its metadata or a KafkaError.
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        await p.send("speedups", b"seen")
        closer: list = []

        async def one(i: int):
            md = await p.send("speedups", b"%d" % i)
            if not closer:
                closer.append(asyncio.ensure_future(p.close()))
                await closer[0]
            return md

        res = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(2000)), return_exceptions=True), 30)
        assert all(not isinstance(r, BaseException) or isinstance(r, KafkaError) for r in res), {type(r) for r in res}


async def test_woken_task_cancels_later_waiters_and_flushes(broker):
    # Woken tasks cancel tasks later in the same batch and flush: nothing is
    # stranded and the producer still works afterwards.
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        await p.send("speedups", b"seen")
        tasks: list[asyncio.Task] = []

        async def one(i: int):
            md = await p.send("speedups", b"%d" % i)
            if i % 2 == 0:
                for t in tasks[i + 1 : i + 3]:
                    t.cancel()
                await p.flush(timeout=10)
            return md

        tasks.extend(asyncio.ensure_future(one(i)) for i in range(2000))
        done, pending = await asyncio.wait(tasks, timeout=30)
        assert not pending
        await asyncio.wait_for(p.flush(), 10)
        assert (await p.send("speedups", b"after")).topic == "speedups"
