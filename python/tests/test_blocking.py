"""The blocking producer from many threads (GIL released while waiting)."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import kpush
from conftest import consume


def test_blocking_producer_many_threads(broker):
    with kpush.Producer(broker.bootstrap) as p:
        with ThreadPoolExecutor(64) as ex:
            mds = list(ex.map(lambda i: p.send("sync", b"t-%d" % i, key=b"%d" % (i % 7)), range(3000)))
        p.flush(timeout=10)
        assert p.stats()["records_sent"] == 3000
    got = consume(broker.bootstrap, "sync", 3000)
    assert {(m.partition, m.offset) for m in mds} <= {(r.partition, r.offset) for r in got}
    with pytest.raises(kpush.NotWrittenError):
        p.send("sync", b"closed")


def test_blocking_send_releases_the_gil(own_broker):
    # While one thread waits inside the engine (broker paused: its request
    # stays unanswered), this thread keeps running Python. Were the GIL held
    # during kp_send_sync, this thread would block for good: the watchdog
    # (a C thread, no GIL needed) then dumps the stacks and fails the run.
    faulthandler.dump_traceback_later(60, exit=True, file=sys.__stderr__)
    try:
        with kpush.Producer(own_broker.bootstrap, delivery_timeout_ms=60_000) as p:
            p.send("fault", b"warm-up")
            own_broker.pause()  # returns once the broker is stopped: nothing is answered from now on
            done = threading.Event()
            t = threading.Thread(target=lambda: (p.send("fault", b"blocked"), done.set()))
            t.start()
            # The request in flight means the sender is inside the engine's
            # Send; from here on this thread runs Python only.
            deadline = time.monotonic() + 30
            while p.stats()["inflight_requests"] != 1:
                assert time.monotonic() < deadline, "the blocked send's request never went in flight"
            n = 0
            while n < 2_000_000:
                n += 1
            assert not done.is_set() and t.is_alive()
            own_broker.resume()
            t.join(30)
            assert done.is_set()
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_blocking_errors(broker):
    with kpush.Producer(broker.bootstrap) as p:
        with pytest.raises(kpush.NotWrittenError) as e:
            p.send("no-such-topic", b"x")
        assert e.value.cause == "unknown_topic"
        with pytest.raises(TypeError):
            p.send("sync", 1)


def test_blocking_partitions_for(broker):
    # The same method as kpush.aio.Producer.partitions_for, blocking.
    with kpush.Producer(broker.bootstrap) as p:
        assert p.partitions_for("sync") == {0, 1, 2}
        assert p.partitions_for("gc") == {0}
        with pytest.raises(kpush.KafkaError) as e:
            p.partitions_for("no-such-topic", timeout=10)
        assert e.value.cause == "unknown_topic", e.value
        with pytest.raises(TypeError):
            p.partitions_for(b"sync")
    with pytest.raises(kpush.NotWrittenError):
        p.partitions_for("sync")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc/self/fd (Linux)")
def test_collected_blocking_producer_frees_its_fds(broker):
    # A producer garbage-collected without close() is closed in the
    # background and its handle freed: its completion pipe (two fds) is
    # closed, so a process that leaks producers does not run out of fds.
    import gc
    import warnings

    def cycle() -> None:
        p = kpush.Producer(broker.bootstrap)
        del p
        gc.collect()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        cycle()  # the engine's own fds (Go runtime, first connections) open once
        before = _open_fds()
        n = 200
        for _ in range(n):
            cycle()
    # Connections close as the background closes finish: wait (bounded) for
    # the count to settle; a leak of two per producer never does.
    deadline = time.monotonic() + 30
    while _open_fds() > before + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_fds() <= before + 10, f"{_open_fds() - before} more fds after {n} collected producers"
