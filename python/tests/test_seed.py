"""The seed users' code, written for aiokafka, with only the import changed."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from conftest import consume, end_offsets

from kpush.aio import AIOKafkaProducer  # was: from aiokafka import AIOKafkaProducer

log = logging.getLogger("seed")


async def seed_handlers(bootstrap: str, n: int) -> list:
    """Many coroutines each awaiting send_and_wait directly (an endpoint per record)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        async def handle(i: int):
            return await producer.send_and_wait("seed", value=b"event-%d" % i, key=b"user-%d" % (i % 100))

        return await asyncio.gather(*(handle(i) for i in range(n)))
    finally:
        await producer.stop()


async def seed_queue(bootstrap: str, n: int) -> int:
    """The queue workaround: asyncio.Queue(1000) of (Event, (topic, value, key)),
    one worker awaiting send_and_wait, restarted when it has finished."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    queue: asyncio.Queue = asyncio.Queue(1000)
    acked = 0

    async def worker():
        nonlocal acked
        while True:
            event, (topic, value, key) = await queue.get()
            try:
                await producer.send_and_wait(topic, value, key=key)
                acked += 1
            except Exception:
                log.exception("send failed, dropping")
            finally:
                event.set()
                queue.task_done()

    task = None

    def ensure_worker():
        nonlocal task
        if task is None or task.done():
            task = asyncio.ensure_future(worker())
            task.add_done_callback(lambda _: ensure_worker() if not stopping else None)

    stopping = False
    ensure_worker()

    async def endpoint(i: int):
        event = asyncio.Event()
        await queue.put((event, ("queue", b"q-%d" % i, b"k-%d" % (i % 10))))
        await event.wait()

    await asyncio.gather(*(endpoint(i) for i in range(n)))
    stopping = True
    task.cancel()
    await producer.stop()
    return acked


async def test_seed_handlers_every_record_once(broker):
    n = 5000
    before = sum(end_offsets(broker.bootstrap, "seed").values())
    mds = await asyncio.wait_for(seed_handlers(broker.bootstrap, n), 300)
    got = consume(broker.bootstrap, "seed", n, timeout=60)
    assert Counter(r.value for r in got) == Counter(b"event-%d" % i for i in range(n))
    assert {(m.partition, m.offset) for m in mds} == {(r.partition, r.offset) for r in got}
    # consume() stops at n: a duplicate written beyond it shows only here.
    assert sum(end_offsets(broker.bootstrap, "seed").values()) - before == n


async def test_seed_queue_worker_every_record_once(broker):
    n = 3000
    before = sum(end_offsets(broker.bootstrap, "queue").values())
    acked = await asyncio.wait_for(seed_queue(broker.bootstrap, n), 300)
    assert acked == n
    got = consume(broker.bootstrap, "queue", n, timeout=60)
    assert Counter(r.value for r in got) == Counter(b"q-%d" % i for i in range(n))
    assert sum(end_offsets(broker.bootstrap, "queue").values()) - before == n  # nothing beyond n


async def test_aiokafka_send_returns_future_and_partitions_for(broker):
    async with AIOKafkaProducer(bootstrap_servers=broker.bootstrap, value_serializer=str.encode,
                                key_serializer=str.encode) as p:
        fut = await p.send("seed", "v", key="k", headers=[("h", b"1")])
        md = await fut
        assert md.topic == "seed" and md.topic_partition == ("seed", md.partition)
        assert await p.partitions_for("seed") == {0, 1, 2}
        await p.flush()
