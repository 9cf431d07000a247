"""The completion queue's wake-up protocol: nothing is left in the queue."""

from __future__ import annotations

import asyncio

import pytest

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


async def test_reader_hands_over_what_its_tasks_send(broker, monkeypatch):
    # A task the reader wakes (await send() resolved by Fast.resolve) and
    # that sends again has its record handed to the engine when the reader
    # ends, in the same loop iteration — not by a call_soon one iteration
    # later. Every record is still acknowledged, in order.
    import sys

    if not _core.HAVE_SPEEDUPS:
        # The pure-Python twin (KPUSH_NO_SPEEDUPS=1) resolves with
        # set_result, which schedules the task's wake-up: the task runs
        # after the reader, so its records go by call_soon.
        pytest.skip("needs kpush._speedups: the twin does not run task steps in the reader")

    callers: list[str] = []
    orig = _core.Core.send_pending

    def spy(self):
        callers.append(sys._getframe(1).f_code.co_name)
        orig(self)

    monkeypatch.setattr(_core.Core, "send_pending", spy)
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        await p.send("reader", b"warm", key=b"k")
        callers.clear()
        offsets = [(await p.send("reader", b"%d" % i, key=b"k")).offset for i in range(20)]
    assert offsets == sorted(offsets) and len(set(offsets)) == 20
    others = [c for c in callers if c != "_on_readable"]
    # The first record of the run is sent from outside the reader; close's
    # control() sends what is pending too.
    assert len(others) <= 2, f"send_pending called outside the reader {len(others)} times: {others}"
