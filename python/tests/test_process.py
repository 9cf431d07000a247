"""Process-level behaviour: GC without close, fork, Ctrl-C."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys

import pytest


from kpush.aio import Producer

from test_cancel_close import wait_for


async def test_garbage_collected_without_close_warns(broker):
    p = Producer(bootstrap_servers=broker.bootstrap, linger_ms=60_000)
    await p.start()
    core = p._core
    fut = p.send_nowait("gc", b"pending")
    with pytest.warns(ResourceWarning, match="without close"):
        del p
        gc.collect()
    await wait_for(lambda: core.closed, what="abandoned producer closed")
    assert fut.done() and fut.exception() is not None  # failed (linger kept it buffered), not lost


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc/self/fd (Linux)")
def test_collected_after_its_loop_closed_frees_its_fds(broker):
    # A producer left open when its loop closed (asyncio.run returned) has no
    # reader left to free its handle: collecting it must still close its
    # completion pipe, or each such producer keeps two fds open.
    import asyncio
    import time
    import warnings

    async def leak() -> Producer:
        p = Producer(bootstrap_servers=broker.bootstrap)
        await p.start()
        await p.send("gc", b"left open")
        return p

    def cycle() -> None:
        p = asyncio.run(leak())
        del p
        gc.collect()

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        cycle()  # the engine's own fds open once
        before = fds()
        n = 50
        for _ in range(n):
            cycle()
    deadline = time.monotonic() + 30  # connections close as the closes finish
    while fds() > before + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fds() <= before + 10, f"{fds() - before} more fds after {n} producers collected after their loop"


FORK_SCRIPT = """
import asyncio, os, sys
import kpush
from kpush.aio import Producer

async def parent():
    async with Producer(bootstrap_servers=sys.argv[1]) as p:
        await p.send("fork", b"parent")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                p.send_nowait("fork", b"child")
            except kpush.ForkedProcessError as e:
                code = 0 if "after forking" in str(e) else 2
            try:
                Producer(bootstrap_servers=sys.argv[1])
                kpush.Producer(sys.argv[1])
                code = 3
            except kpush.ForkedProcessError:
                pass
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        await p.send("fork", b"parent-after")
asyncio.run(parent())
"""


def test_forked_child_gets_a_clear_error(broker):
    r = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, broker.bootstrap], capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 0, r.stderr
    assert "child 0" in r.stdout, r.stdout + r.stderr


SIGINT_SCRIPT = """
import asyncio, sys
from kpush.aio import Producer

futs = []
async def main():
    async with Producer(bootstrap_servers=sys.argv[1]) as p:
        async def sender(i):
            while True:
                await p.send("sigint", b"%d" % i)
        tasks = [asyncio.ensure_future(sender(i)) for i in range(200)]
        await p.send("sigint", b"ready")
        print("ready", flush=True)
        while True:
            futs.append(p.send_nowait("sigint", b"nowait"))
            await asyncio.sleep(0.001)
try:
    asyncio.run(main())
except KeyboardInterrupt:
    print("interrupted", all(f.done() for f in futs), len(futs), flush=True)
    raise
"""


def test_ctrl_c_during_sends(broker):
    p = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT, broker.bootstrap], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err, err
    assert out.startswith("interrupted True"), out + err
    assert p.returncode != 0


def _env() -> dict:
    env = dict(os.environ)
    import kpush

    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(kpush.__file__)))
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


