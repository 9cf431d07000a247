"""Cancellation before and during flight; close with sends pending."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import consume, end_offsets
from kpush import KafkaError, NotWrittenError, OutcomeUnknownError
from kpush.aio import Producer


async def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll a cheap condition on the loop until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_cancel_before_sent_withdraws(broker):
    # A long linger keeps the record buffered: cancelling then must withdraw it.
    async with Producer(bootstrap_servers=broker.bootstrap, linger_ms=60_000) as p:
        await p.partitions_for("cancel")
        before = end_offsets(broker.bootstrap, "cancel")[0]
        task = asyncio.ensure_future(p.send("cancel", b"withdrawn"))
        await wait_for(lambda: p.stats().get("records_buffered", 0) == 1, what="record buffered")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: p.stats()["records_buffered"] == 0, what="record withdrawn")
        assert p.stats()["records_failed"] == 1
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        md = await p.send("cancel", b"after")
    assert md.offset == before  # the withdrawn record never took an offset
    got = consume(broker.bootstrap, "cancel", before + 1)
    assert [r.value for r in got if r.offset >= before] == [b"after"]


async def test_cancel_in_flight_drops_outcome(own_broker):
    async with Producer(bootstrap_servers=own_broker.bootstrap) as p:
        await p.send("cancel", b"warm-up")
        own_broker.pause()
        # resume() in finally: a failure with the broker still frozen would
        # make the close below wait out the record's delivery timeout (2 min).
        try:
            task = asyncio.ensure_future(p.send("cancel", b"in-flight"))
            await wait_for(lambda: p.stats()["inflight_requests"] == 1, what="request in flight")
            task.cancel()
            # task.cancel() cancels the Python future whatever the engine does;
            # what reaches the engine (kp_cancel) shows in what it does next.
            with pytest.raises(asyncio.CancelledError):
                await task
            # The engine gave the record its outcome at once (outcome unknown,
            # dropped), so a flush has nothing left to wait for although the
            # broker is still frozen and the request unanswered. Without the
            # cancel reaching the engine this flush times out.
            await p.flush(timeout=10)
            assert p.stats()["inflight_requests"] == 1  # the request itself is still out
        finally:
            own_broker.resume()
        # The request is answered later; the record stays accounted for until
        # then (its buffer space is released with its batch).
        await wait_for(lambda: p.stats()["records_buffered"] == 0, what="batch done")
    got = consume(own_broker.bootstrap, "cancel", 2)
    assert [r.value for r in got] == [b"warm-up", b"in-flight"]  # written once; its outcome was dropped


async def test_close_with_sends_pending_flushes_them(broker):
    p = Producer(bootstrap_servers=broker.bootstrap, linger_ms=2_000)
    await p.start()
    futs = [p.send_nowait("close", b"%d" % i) for i in range(2000)]
    await p.close()
    assert all(f.done() for f in futs)
    assert all(not f.exception() for f in futs)
    with pytest.raises(NotWrittenError) as e:
        p.send_nowait("close", b"late")
    assert e.value.cause == "closed"


async def test_close_timeout_resolves_every_future(own_broker):
    p = Producer(bootstrap_servers=own_broker.bootstrap)
    await p.start()
    await p.send("close", b"warm-up")
    own_broker.pause()
    futs = [p.send_nowait("close", b"%d" % i) for i in range(500)]
    await wait_for(lambda: p.stats()["inflight_requests"] >= 1, what="request in flight")
    await asyncio.wait_for(p.close(timeout=0.5), 30)
    assert all(f.done() for f in futs)
    errors = [f.exception() for f in futs]
    assert all(isinstance(e, (NotWrittenError, OutcomeUnknownError)) for e in errors)
    assert any(isinstance(e, OutcomeUnknownError) for e in errors)  # the in-flight ones
    assert all(isinstance(e, KafkaError) and e.cause in ("closed", "cancelled", "deadline_exceeded", "other") or isinstance(e, OutcomeUnknownError) for e in errors)
