"""Guards for the bridge's rules (the issue's "The bridge" section): one
foreign drain call resolves many records, no Python thread per producer,
and the engine is loaded at the first Producer, not at import."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

from kpush.aio import Producer


class CountingLib:
    """Forwards every call to the engine library, counting kp_drain calls."""

    def __init__(self, lib) -> None:
        self._lib = lib
        self.drains = 0
        self.drained = 0

    def kp_drain(self, *args):
        self.drains += 1
        n = self._lib.kp_drain(*args)
        self.drained += n
        return n

    def __getattr__(self, name):
        return getattr(self._lib, name)


async def test_one_drain_resolves_many_records(broker):
    # A send_nowait burst: completions queue up while the loop is busy, and
    # the reader takes them in few kp_drain calls (up to 4,096 a call), never
    # one call (let alone one call_soon_threadsafe) per record.
    n = 20_000
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        await p.send("rules", b"warm-up")
        counting = CountingLib(p._core.lib)
        p._core.lib = counting
        futs = [p.send_nowait("rules", b"%d" % i) for i in range(n)]
        await asyncio.gather(*futs)
        p._core.lib = counting._lib
    assert counting.drained >= n
    # Each wake-up costs at least two calls (the last one finds the queue
    # empty); a few hundred calls for 20,000 records is ≪ one per record.
    assert counting.drains <= n // 50, f"{counting.drains} kp_drain calls for {n} records"


async def test_producers_start_no_python_threads(broker):
    # Go never calls into Python, and the loop's reader on the engine's pipe
    # drains completions: no poll thread per producer on the Python side.
    # The threads themselves, not their count: a thread of an earlier test
    # (a broker's output pump) ending meanwhile would hide a new one.
    before = set(threading.enumerate())
    producers = [Producer(bootstrap_servers=broker.bootstrap) for _ in range(3)]
    for p in producers:
        await p.start()
    try:
        await asyncio.gather(*(p.send("rules", b"x") for p in producers))
        new = [t.name for t in set(threading.enumerate()) - before]
        assert not new, f"producers started Python threads: {new}"
    finally:
        for p in producers:
            await p.close()


def test_engine_loaded_at_first_producer_not_at_import(broker):
    # In a fresh interpreter: importing kpush and kpush.aio loads no engine
    # (no Go runtime starts in processes that never produce); the first
    # Producer does, when it starts (the asyncio producer binds to the loop
    # running its start()).
    code = r"""
import sys
import kpush, kpush.aio
from kpush import _ffi
def mapped():
    with open("/proc/self/maps") as f:
        return "_engine" in f.read()
assert not _ffi.loaded() and not mapped(), "engine loaded at import"
import asyncio
async def main():
    p = kpush.aio.Producer(bootstrap_servers=sys.argv[1])
    assert not _ffi.loaded() and not mapped(), "engine loaded by the constructor"
    async with p:  # start() creates the engine producer
        assert _ffi.loaded() and mapped(), "engine not loaded by the first Producer"
asyncio.run(main())
print("ok")
"""
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code, broker.bootstrap], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
