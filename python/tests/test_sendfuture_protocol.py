"""SendFuture (kpush._speedups) against asyncio.Future's protocol, no broker.

Each test makes its SendFuture with Fast.send and completes it with
Fast.resolve over a kp_completion array built here, the way
Core._on_readable feeds the completions kp_drain filled.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import gc
import struct
import subprocess
import sys

import pytest

from kpush import _fast

pytestmark = pytest.mark.skipif(not _fast.HAVE_SPEEDUPS, reason="kpush._speedups not in use")

_C = struct.Struct("=Qqqiiiiqq")  # kp_completion
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="-")


def _fast_for(loop):
    from kpush._records import RecordMetadata

    return _fast.Fast({}, {"t": b"t"}, loop.create_future, lambda: None, RecordMetadata, loop, None)


def _resolve(f, ids):
    buf = ctypes.create_string_buffer(_C.size * len(ids))
    for j, i in enumerate(ids):
        _C.pack_into(buf, j * _C.size, i, 7, 0, 0, 0, 0, 0, 0, 0)
    return f.resolve(ctypes.addressof(buf), len(ids), 0)


async def _resolve_from_the_loop(loop, f, ids):
    # As the loop's pipe reader does: from a callback, outside any task, so
    # the done callbacks run during resolve().
    done = loop.create_future()
    loop.call_soon(lambda: done.set_result(_resolve(f, ids)))
    await done


def _run(code: str) -> subprocess.CompletedProcess:
    # In a child: the bugs these guard crash the interpreter.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


async def test_callback_without_context_runs_in_a_copy_of_the_registering_context():
    # asyncio copies the current context at add_done_callback(fn); without
    # that the callback ran in the context of whoever resolved the future
    # (the pipe reader's).
    loop = asyncio.get_running_loop()
    f = _fast_for(loop)
    sf = f.send(0, "t", b"x", None, None, None, None)
    seen = []
    var.set("registered")
    sf.add_done_callback(lambda fut: seen.append(var.get()))

    def reader():
        var.set("reader")
        _resolve(f, [f.seq])

    contextvars.Context().run(reader)
    await asyncio.sleep(0)
    assert seen == ["registered"]


def test_remove_done_callback_with_an_eq_that_removes_callbacks():
    # The comparison runs Python; here it empties the callback list midway.
    r = _run(r'''
import asyncio
from kpush._fast import Fast
from kpush._records import RecordMetadata
async def main():
    loop = asyncio.get_running_loop()
    f = Fast({}, {"t": b"t"}, loop.create_future, lambda: None, RecordMetadata, loop, None)
    sf = f.send(0, "t", b"x", None, None, None, None)
    cbs = [(lambda x, i=i: None) for i in range(50)]
    for c in cbs:
        sf.add_done_callback(c)
    calls = []
    class Evil:
        def __eq__(self, o):
            calls.append(1)
            if len(calls) == 2:
                for c in list(cbs):
                    sf.remove_done_callback(c)
                cbs.clear()
            return False
    assert sf.remove_done_callback(Evil()) == 0
    sf.add_done_callback(print)
    assert sf.remove_done_callback(print) == 1
asyncio.run(main())
''')
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="3.11's _xxsubinterpreters")
def test_a_legacy_subinterpreter_refuses_the_extension_or_gets_its_own_errors():
    # The extension's types and names are per process: in a subinterpreter it
    # must not hand out the main interpreter's CancelledError.
    r = _run(r'''
import _xxsubinterpreters as si
import kpush._speedups
sub = """
import asyncio
try:
    import kpush._speedups as s
except ImportError:
    print("refused")
else:
    from kpush._records import RecordMetadata
    async def main():
        loop = asyncio.get_running_loop()
        f = s.Fast({}, {"t": b"t"}, loop.create_future, lambda: None, RecordMetadata, loop, None)
        sf = f.send(0, "t", b"x", None, None, None, None)
        sf.cancel()
        try:
            sf.result()
        except asyncio.CancelledError:
            print("ok")
        except BaseException as e:
            print("foreign", type(e))
    asyncio.run(main())
"""
si.run_string(si.create(), sub)
''')
    assert r.stdout.strip() in ("ok", "refused"), (r.stdout, r.stderr[-500:])


async def test_argument_checks_as_asyncio_future():
    loop = asyncio.get_running_loop()
    sf = _fast_for(loop).send(0, "t", b"x", None, None, None, None)
    with pytest.raises(TypeError):
        sf.set_exception(StopIteration())
    with pytest.raises(TypeError):
        sf.set_exception(StopIteration)
    with pytest.raises(TypeError):
        sf.cancel("a", "b")
    with pytest.raises(TypeError):
        sf.cancel("a", msg="b")
    with pytest.raises(TypeError):
        sf.cancel(bogus="b")
    with pytest.raises(TypeError):
        sf.add_done_callback(print, bogus=None)
    assert not sf.done()
    assert sf.cancel(msg="why")
    with pytest.raises(asyncio.CancelledError, match="why"):
        sf.result()


async def test_a_base_exception_from_a_callback_goes_to_the_handler_unless_fatal():
    # As asyncio's Handle: only KeyboardInterrupt and SystemExit propagate
    # (Fast.pop_error); CancelledError and GeneratorExit are reported.
    loop = asyncio.get_running_loop()
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(type(ctx.get("exception"))))
    f = _fast_for(loop)
    for exc in (asyncio.CancelledError, GeneratorExit, ValueError):
        sf = f.send(0, "t", b"x", None, None, None, None)

        def boom(fut, exc=exc):
            raise exc()

        sf.add_done_callback(boom)
        await _resolve_from_the_loop(loop, f, [f.seq])
        assert f.pop_error() is None
    assert seen == [asyncio.CancelledError, GeneratorExit, ValueError]
    sf = f.send(0, "t", b"x", None, None, None, None)

    def interrupt(fut):
        raise KeyboardInterrupt

    sf.add_done_callback(interrupt)
    await _resolve_from_the_loop(loop, f, [f.seq])
    assert isinstance(f.pop_error(), KeyboardInterrupt)


def test_resolve_from_inside_a_task_schedules_the_wakeups():
    # A wake-up run from inside another task cannot enter its own task
    # (RuntimeError to the handler) and the awaiting task was stranded, so
    # stranded that even cancelling it hangs: hence the child, which leaves
    # with os._exit rather than wait for the loop's teardown.
    r = _run(r'''
import asyncio, ctypes, os, struct
from kpush._fast import Fast
from kpush._records import RecordMetadata
async def main():
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(str(ctx.get("exception"))))
    f = Fast({}, {"t": b"t"}, loop.create_future, lambda: None, RecordMetadata, loop, None)
    sf = f.send(0, "t", b"x", None, None, None, None)
    async def waiter():
        return await sf
    t = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)  # t now waits on sf
    buf = ctypes.create_string_buffer(struct.pack("=Qqqiiiiqq", f.seq, 7, 0, 0, 0, 0, 0, 0, 0))
    f.resolve(ctypes.addressof(buf), 1, 0)  # from main's task
    await asyncio.wait([t], timeout=10)
    print("ok" if t.done() and t.result().offset == 7 and not errors else f"stranded {errors}", flush=True)
    os._exit(0)
asyncio.run(main())
''')
    assert r.stdout.strip() == "ok", (r.stdout, r.stderr[-500:])


async def test_an_exception_never_retrieved_is_reported():
    loop = asyncio.get_running_loop()
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    f = _fast_for(loop)
    sf = f.send(0, "t", b"x", None, None, None, None)
    sf.set_exception(ValueError("lost"))
    read = f.send(0, "t", b"x", None, None, None, None)
    read.set_exception(ValueError("read"))
    assert isinstance(read.exception(), ValueError)
    del sf, read, f  # f's futures dict holds them too
    gc.collect()
    assert [str(c["exception"]) for c in seen] == ["lost"]
    assert "never retrieved" in seen[0]["message"]


def test_a_cleared_future_raises_instead_of_crashing():
    # tp_clear (the collector breaking a cycle) leaves the fields NULL while
    # Python code may still reach the object.
    r = _run(r'''
import asyncio, ctypes
from kpush._fast import Fast, SendFuture
from kpush._records import RecordMetadata
get_slot = ctypes.pythonapi.PyType_GetSlot
get_slot.restype, get_slot.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_int]
tp_clear = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.py_object)(get_slot(SendFuture, 51))  # Py_tp_clear
async def main():
    loop = asyncio.get_running_loop()
    f = Fast({}, {"t": b"t"}, loop.create_future, lambda: None, RecordMetadata, loop, None)
    sf = f.send(0, "t", b"x", None, None, None, None)
    sf.set_result(1)
    tp_clear(sf)
    repr(sf)
    for call in (sf.get_loop, lambda: sf.add_done_callback(print), sf.result, lambda: sf.topic, lambda: sf._loop):
        try:
            call()
        except RuntimeError:
            pass
        else:
            raise SystemExit("no RuntimeError from a cleared future")
asyncio.run(main())
''')
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-500:])
