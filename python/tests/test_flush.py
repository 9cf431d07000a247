"""flush() waits for the records sent before it, not for those sent after."""

from __future__ import annotations

import asyncio

import pytest

from kpush import KafkaTimeoutError, NotWrittenError
from kpush.aio import Producer


async def test_flush_does_not_wait_for_records_sent_after_it(own_broker):
    # With the broker paused, a record sent after the flush call cannot get
    # an outcome; the record before it fails at once (too large for a
    # batch). A flush of that generation must return while the later record
    # is still in flight, as the Go Flush does.
    async with Producer(bootstrap_servers=own_broker.bootstrap, max_batch_bytes=1024) as p:
        await p.send("fault", b"warm-up")  # metadata and connection ready
        own_broker.pause()
        try:
            before = p.send_nowait("fault", b"x" * 4096)
            flush = asyncio.ensure_future(p.flush(timeout=30))
            # The flush task's first step (hand over `before`, start the
            # engine's flush) runs before this task resumes.
            await asyncio.sleep(0)
            assert not flush.done()
            after = p.send_nowait("fault", b"after")
            await asyncio.wait_for(flush, 10)  # waiting for `after` too would time out
            assert isinstance(before.exception(), NotWrittenError)
            assert before.exception().cause == "record_too_large"
            assert not after.done()
        finally:
            own_broker.resume()
        md = await asyncio.wait_for(after, 30)
        assert md.topic == "fault"
        await p.flush(timeout=30)  # a later flush covers `after` (already done): returns


async def test_flush_waits_for_records_sent_before_it(broker):
    async with Producer(bootstrap_servers=broker.bootstrap, linger_ms=200) as p:
        futs = [p.send_nowait("flush", b"%d" % i) for i in range(500)]
        await p.flush(timeout=30)
        assert all(f.done() and f.exception() is None for f in futs)
        with pytest.raises(KafkaTimeoutError):
            # nothing sent since: still a flush of the lingering record below
            p.send_nowait("flush", b"lingers")
            await p.flush(timeout=0.01)
