"""Regressions found reviewing the one-call-per-tick bridge: buffers read at
the end of the tick, and a producer abandoned with a tick's records not yet
handed to the engine."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from conftest import consume
from kpush import KafkaError
from kpush.aio import Producer


async def test_bytearray_mutated_after_send_is_sent_as_given(broker):
    # The engine copies a tick's records at the end of the tick. A writable
    # buffer changed after send_nowait returned (in the same tick) must still
    # be sent as it was at the call — and resizing it must not raise.
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        ba = bytearray(b"as-given")
        fut = p.send_nowait("review", ba)
        ba[:] = b"mutated!"  # same length
        ba.extend(b"-and-grown")  # a resize: BufferError while a cffi view exports it
        mv_src = bytearray(b"view-given")
        fut2 = p.send_nowait("review", memoryview(mv_src))
        mv_src[:4] = b"VIEW"
        md, md2 = await fut, await fut2
    got = {r.offset: r.value for r in consume(broker.bootstrap, "review", md2.offset + 1)}
    assert got[md.offset] == b"as-given"
    assert got[md2.offset] == b"view-given"


class _AbandonDuringHandOver:
    """The engine library, except that kp_send_many has another thread call
    abandon() (the garbage collector's path) while the batch is handed over
    (cffi releases the GIL for the call)."""

    def __init__(self, core) -> None:
        self._lib, self._core = core.lib, core

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def kp_send_many(self, h, recs, n):
        go = threading.Event()

        def abandon() -> None:
            go.wait()  # runs once the loop thread drops the GIL for the call
            self._core.abandon()

        t = threading.Thread(target=abandon)
        t.start()
        go.set()
        try:
            return self._lib.kp_send_many(h, recs, n)
        finally:
            t.join()


async def test_abandoned_while_tick_handed_over_resolves_every_future(broker):
    # abandon() starts the engine's close on its own goroutine; the loop is
    # handing a tick's records over at that moment. Every future must
    # resolve (then: closed, or written) and the close must finish.
    p = Producer(bootstrap_servers=broker.bootstrap)
    await p.start()
    await p.partitions_for("review")
    core = p._core
    core.lib = _AbandonDuringHandOver(core)
    futs = [p.send_nowait("review", b"x") for _ in range(100_000)]
    done, pending = await asyncio.wait(futs, timeout=30)
    assert not pending, f"{len(pending)} of {len(futs)} futures never resolved"
    for f in done:
        e = f.exception()
        assert e is None or isinstance(e, KafkaError)
    done, _ = await asyncio.wait([asyncio.ensure_future(_until(lambda: core.closed))], timeout=30)
    assert done, "the abandoned producer never finished closing"
    core.lib = core.lib._lib
    p._core = None  # closed already; no ResourceWarning from __del__


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.01)


async def test_a_topic_waiting_for_metadata_does_not_hold_up_another(broker):
    # The first record of a topic waits for its metadata (here: three answers
    # saying it does not exist, then unknown_topic). A record of a topic
    # that is ready, sent after it, must not wait behind it.
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        await p.partitions_for("review")
        order: list[str] = []

        async def one(topic: str) -> None:
            try:
                await p.send(topic, b"x")
            except KafkaError:
                pass
            order.append(topic)

        await asyncio.wait_for(asyncio.gather(one("no-such-topic-review"), one("review")), 60)
        assert order == ["review", "no-such-topic-review"]
