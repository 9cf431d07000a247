"""The per-record path: the C extension (kpush/_speedups.c) and its Python twin."""

from __future__ import annotations

import asyncio
import contextvars
import os

import pytest

from conftest import CI
from kpush import _core, _fast
from kpush.aio import Producer

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_extension_built_under_ci():
    # The pure-Python twin is a fallback for installs without a compiler;
    # CI (bash .ci/python) must test the extension.
    if os.environ.get("KPUSH_NO_SPEEDUPS") == "1":
        pytest.skip("KPUSH_NO_SPEEDUPS=1: testing the pure-Python twin")
    if not CI and not _fast.HAVE_SPEEDUPS:
        pytest.skip("kpush._speedups not built: python setup.py build_ext --inplace (in python/)")
    assert _fast.HAVE_SPEEDUPS


async def _workload(p: Producer) -> None:
    # The awaiting task is woken directly by the reader (SendFuture): it
    # must resume in its own context, as the current task, with the result.
    async def one(i: int) -> tuple:
        request_id.set(f"req-{i}")
        md = await p.send("speedups", b"v-%d" % i, key=b"k-%d" % (i % 5))
        assert asyncio.current_task() is me[i]
        return request_id.get(), md

    me: dict[int, asyncio.Task] = {}
    for i in range(300):
        me[i] = asyncio.ensure_future(one(i))
    out = await asyncio.gather(*me.values())
    assert [rid for rid, _ in out] == [f"req-{i}" for i in range(300)]
    assert all(md.topic == "speedups" and md.offset >= 0 for _, md in out)
    # send_nowait keeps returning asyncio futures; a bytearray takes the general path.
    fut = p.send_nowait("speedups", bytearray(b"ba"), headers=[("h", b"1")])
    assert isinstance(fut, asyncio.Future)
    assert (await fut).topic == "speedups"


async def test_send_wakes_tasks_in_their_context(broker):
    if not _fast.HAVE_SPEEDUPS:
        pytest.skip("kpush._speedups not built")
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        await _workload(p)


async def test_python_twin(broker, monkeypatch):
    monkeypatch.setattr(_core, "Fast", _fast.PyFast)
    monkeypatch.setattr(_core, "HAVE_SPEEDUPS", False)
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        assert isinstance(p._core.fast, _fast.PyFast)
        await _workload(p)


async def test_cancel_while_awaiting_fast_path_send(broker):
    # Task.cancel() reaches the awaited SendFuture (or asyncio future):
    # the task ends cancelled and the producer stays usable.
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        p.send_nowait("cancel", b"topic seen")  # later sends take the fast path
        task = asyncio.ensure_future(p.send("cancel", b"withdrawn"))
        await asyncio.sleep(0)
        task.cancel("bye")
        with pytest.raises(asyncio.CancelledError):
            await task
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        assert (await p.send("cancel", b"next")).topic == "cancel"
