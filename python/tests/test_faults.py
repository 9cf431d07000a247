"""Broker killed mid-run and restarted: every future resolves, none lost."""

from __future__ import annotations

import asyncio
import signal

from conftest import consume, end_offsets
from kpush import KafkaError
from kpush.aio import Producer

from test_cancel_close import wait_for


def start_stream(p: Producer, topic: str, futs: list, keys: int = 0) -> tuple[asyncio.Event, asyncio.Task]:
    """Start a task that sends records b"0", b"1", ... with send_nowait,
    appending (i, future) to futs, yielding to the loop every 50 records,
    until the returned event is set; with keys, record i has key i % keys."""
    stop = asyncio.Event()

    async def sender() -> None:
        i = 0
        while not stop.is_set():
            key = b"%d" % (i % keys) if keys else None
            futs.append((i, p.send_nowait(topic, b"%d" % i, key=key)))
            i += 1
            if i % 50 == 0:
                await asyncio.sleep(0.001)

    return stop, asyncio.ensure_future(sender())


async def test_broker_killed_and_restarted(own_broker):
    async with Producer(bootstrap_servers=own_broker.bootstrap, delivery_timeout_ms=60_000,
                        request_timeout_ms=5_000) as p:
        await p.send("fault", b"warm-up")
        futs: list = []
        stop, task = start_stream(p, "fault", futs)
        await wait_for(lambda: len(futs) > 2000, what="sends under way")
        own_broker.stop(signal.SIGKILL)
        killed_at = len(futs)  # later sends can only be acknowledged by the new broker
        await wait_for(lambda: len(futs) > 4000, what="sends while down")
        own_broker.start()
        restarted_at = len(futs)
        await wait_for(lambda: len(futs) > restarted_at + 2000, what="sends after restart")
        stop.set()
        await task
        done, pending = await asyncio.wait([f for _, f in futs], timeout=90)
        assert not pending, f"{len(pending)} futures never resolved"
        for i, f in futs:
            e = f.exception()
            assert e is None or isinstance(e, KafkaError), repr(e)
        ok = [(i, f.result()) for i, f in futs if f.exception() is None]
        assert ok, "nothing was acknowledged"
        # The restarted broker starts empty: every record it acknowledged must be in its log.
        acked_new = [(i, md) for i, md in ok if i >= killed_at]
        assert any(i >= restarted_at for i, _ in acked_new)
    total = sum(end_offsets(own_broker.bootstrap, "fault").values())
    logged = {(r.partition, r.offset): r.value for r in consume(own_broker.bootstrap, "fault", total, timeout=60)}
    assert len(logged) == total
    for i, md in acked_new:
        assert logged.get((md.partition, md.offset)) == b"%d" % i, f"record {i} acknowledged but lost"
