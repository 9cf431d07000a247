"""Review regressions: cancellation racing a completion, event loops and
threads, abandon() from another thread."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

import kpush
from kpush import NotWrittenError, OutcomeUnknownError
from kpush.aio import Producer

from test_cancel_close import wait_for


async def test_cancel_as_failure_arrives_leaks_no_exception(broker):
    # The record's failure is drained (its future gets the exception) in the
    # same loop iteration in which the awaiting task is cancelled: the task
    # ends cancelled, and nothing reaches the loop's exception handler
    # ("Future exception was never retrieved").
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        async with Producer(bootstrap_servers=broker.bootstrap) as p:
            await p.send("bad", b"warm-up")
            core = p._core
            loop.remove_reader(core.fd)  # hold completions in the engine's queue
            task = asyncio.ensure_future(p.send("bad", b"x", partition=999))
            await wait_for(lambda: p.stats().get("records_failed", 0) >= 1, what="record failed in the engine")
            core._on_readable()  # the future gets its exception; the task is woken ...
            task.cancel()  # ... and cancelled before it runs
            loop.add_reader(core.fd, core._on_readable)
            with pytest.raises(asyncio.CancelledError):
                await task
            del task
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert seen == []


async def test_send_from_another_loop_is_a_typed_error(broker):
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        errors: list[BaseException] = []

        async def elsewhere() -> None:
            for call in (lambda: p.send_nowait("loops", b"x"), lambda: p.send("loops", b"x")):
                try:
                    r = call()
                    if asyncio.iscoroutine(r):
                        await r
                    errors.append(AssertionError("no error"))
                except BaseException as e:  # noqa: BLE001 - the test inspects it
                    errors.append(e)

        t = threading.Thread(target=lambda: asyncio.run(elsewhere()))
        t.start()
        t.join(30)
        assert len(errors) == 2
        for e in errors:
            assert isinstance(e, kpush.WrongLoopError), repr(e)
            assert isinstance(e, RuntimeError)
        # Outside any loop (e.g. a plain thread): the same error.
        with pytest.raises(kpush.WrongLoopError):
            await asyncio.to_thread(p.send_nowait, "loops", b"x")
        assert (await p.send("loops", b"still works")).offset >= 0


def test_producers_on_several_loops_and_threads(broker):
    # The documented rule: one producer per event loop; any number of loops
    # (threads), each with its own producers, in one process.
    results: dict[int, int] = {}

    def worker(i: int) -> None:
        async def main() -> None:
            async with Producer(bootstrap_servers=broker.bootstrap) as a, Producer(bootstrap_servers=broker.bootstrap) as b:
                mds = await asyncio.gather(*(x.send("loops", b"%d" % i) for _ in range(200) for x in (a, b)))
                results[i] = len(mds)

        asyncio.run(main())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: 400 for i in range(4)}


async def test_second_close_does_not_finish_the_producer(own_broker):
    # abandon() (the garbage collector's path, any thread) and close() could
    # both pass the `closing` check and start two engine closes. The second
    # one's immediate "already closed" completion finished the producer at
    # once: records still in flight failed with a made-up NotWrittenError
    # ("closed"; they may have been written) instead of the engine's
    # OutcomeUnknownError, and the engine handle was freed while its close
    # was still running. The race is forced here by clearing the flag.
    p = Producer(bootstrap_servers=own_broker.bootstrap)
    await p.start()
    try:
        await p.send("close", b"warm-up")
        own_broker.pause()
        futs = [p.send_nowait("close", b"%d" % i) for i in range(50)]
        await wait_for(lambda: p.stats()["inflight_requests"] >= 1, what="request in flight")
        core = p._core
        t = threading.Thread(target=core.abandon)
        t.start()
        t.join(10)
        core.closing = False  # as if close() had passed its check before abandon() set it
        core.close_future = None
        await asyncio.wait_for(p.close(), 60)
    finally:
        own_broker.resume()
    assert all(f.done() for f in futs)
    errs = [f.exception() for f in futs]
    assert any(isinstance(e, OutcomeUnknownError) for e in errs), [repr(e) for e in errs[:3]]
    assert all(isinstance(e, (OutcomeUnknownError, NotWrittenError)) for e in errs)


async def test_close_timeout_while_intake_waits_for_buffer_space(own_broker):
    # The engine's buffer is full (broker paused) and the intake goroutine is
    # blocked handing a record over; close(timeout) must still return after
    # about its timeout, not after the delivery timeout, and every awaiting
    # send gets an outcome.
    p = Producer(bootstrap_servers=own_broker.bootstrap, max_buffered_records=10, delivery_timeout_ms=120_000)
    await p.start()
    try:
        await p.send("close", b"warm-up")
        own_broker.pause()
        tasks = [asyncio.ensure_future(p.send("close", b"%d" % i)) for i in range(50)]
        await wait_for(lambda: p.stats()["records_buffered"] >= 10, what="buffer full")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(p.close(timeout=0.5), 20)
        assert loop.time() - t0 < 20
        done, pending = await asyncio.wait(tasks, timeout=20)
        assert not pending
        for t in done:
            assert isinstance(t.exception(), (NotWrittenError, OutcomeUnknownError)), repr(t.exception())
    finally:
        own_broker.resume()
