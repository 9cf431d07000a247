"""The completion queue's wake-up protocol: nothing is left in the queue."""

from __future__ import annotations

import asyncio

from kpush import NotWrittenError
from kpush import _core
from kpush.aio import Producer


async def test_drain_stopped_by_message_space_still_empties_queue(broker, monkeypatch):
    # kp_drain stops early when the error messages fill msgbuf, returning
    # fewer than _CAP completions while the queue still holds more; the pipe
    # is not written again (the queue never went empty), so the reader must
    # keep draining until kp_drain returns 0 or those futures never resolve.
    monkeypatch.setattr(_core, "_MSGCAP", 256)
    async with Producer(bootstrap_servers=broker.bootstrap, max_batch_bytes=1024) as p:
        futs = [p.send_nowait("bad", b"x" * 4096) for _ in range(50)]
        done, pending = await asyncio.wait(futs, timeout=20)
        assert not pending, f"{len(pending)} of {len(futs)} sends never resolved"
        for f in done:
            assert isinstance(f.exception(), NotWrittenError)
            assert f.exception().cause == "record_too_large"
