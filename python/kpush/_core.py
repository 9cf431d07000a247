"""The engine handle shared by the asyncio front ends.

Threads and ownership: a _Core belongs to one event loop. Every method runs
on that loop's thread, except abandon(), which the garbage collector may call
from any thread and which only calls the (thread-safe) engine. Go never calls
back: the loop's reader on the engine's pipe (_on_readable) drains many
completions per foreign call and resolves their futures here.
"""

from __future__ import annotations

import asyncio
import json
import functools
import os
import re
import struct
import threading
from typing import Any, Optional

from . import _ffi
from ._config import Settings
from ._errors import CAUSES, InvalidConfigError, KafkaError, KafkaTimeoutError, NotWrittenError, make_error
from ._fast import HAVE_SPEEDUPS, Fast, split
from ._records import RecordMetadata

_CAP = 4096  # completions per kp_drain call
# kp_completion: id, offset, timestamp_ms, partition, kind, cause, code, msg_off, msg_len.
_COMPLETION = struct.Struct("=Qqqiiiiqq")
_KIND_OK = _ffi.KIND_OK
_CAUSE_CLOSED = CAUSES.index("closed")
_new_tuple = tuple.__new__
_MSGCAP = 1 << 18  # bytes of error messages per kp_drain call
_SNAKE = re.compile(r"(?<!^)(?=[A-Z][a-z])")


def _snake(name: str) -> str:
    return _SNAKE.sub("_", name).lower().replace("i_d", "id")


def engine_error(ffi: Any, cause: int, errbuf: Any, topic: Optional[str] = None) -> KafkaError:
    """The exception for a failed engine call (kp_new, kp_flush, ...)."""
    msg = ffi.string(errbuf).decode("utf-8", "replace")
    name = CAUSES[cause] if 0 <= cause < len(CAUSES) else "other"
    if name == "invalid_config":
        return InvalidConfigError(msg, name)
    if name == "deadline_exceeded":
        return KafkaTimeoutError(msg, name)
    if name == "closed":
        return NotWrittenError(msg, name, topic)
    return KafkaError(msg, name, topic)


def new_handle(settings: Settings) -> tuple[Any, Any, int]:
    """Create an engine producer; return (ffi, lib, handle)."""
    ffi, lib = _ffi.load()
    cause = ffi.new("int32_t *")
    err = ffi.new("char[]", 4096)
    cfg = settings.to_json()
    h = lib.kp_new(cfg, len(cfg), cause, err, 4096)
    if h == 0:
        raise engine_error(ffi, cause[0], err)
    return ffi, lib, h


def stats(ffi: Any, lib: Any, h: int) -> dict[str, Any]:
    """The engine's Stats as a dict with snake_case keys."""
    cap = 4096
    while True:
        buf = ffi.new("char[]", cap)
        n = lib.kp_stats(h, buf, cap)
        if n <= cap:
            raw = json.loads(ffi.unpack(buf, n)) if n else {}
            return {_snake(k): v for k, v in raw.items()}
        cap = n


def _future_factory(loop: asyncio.AbstractEventLoop) -> Any:
    """loop.create_future, or (when the loop does not override asyncio's)
    the Future constructor itself, which skips a Python frame per record."""
    if type(loop).create_future is asyncio.BaseEventLoop.create_future:
        return functools.partial(asyncio.Future, loop=loop)
    return loop.create_future


class Core:
    """One engine producer bound to one event loop."""

    __slots__ = (
        "ffi", "lib", "h", "fd", "loop", "futures", "closing", "closed",
        "cbuf", "caddr", "msgbuf", "token_provider", "close_future", "close_lock", "fast", "topics", "reading", "__weakref__",
    )

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.ffi, self.lib, self.h = new_handle(settings)
        self.fd = self.lib.kp_fd(self.h)
        self.loop = loop
        self.futures: dict[int, tuple[asyncio.Future[Any], Optional[str]]] = {}
        self.closing = False
        self.closed = False
        self.cbuf = self.ffi.new("kp_completion[]", _CAP)
        self.caddr = int(self.ffi.cast("uintptr_t", self.cbuf))
        assert self.ffi.sizeof("kp_completion") == _COMPLETION.size
        self.msgbuf = self.ffi.new("char[]", _MSGCAP)
        self.token_provider = settings.token_provider
        self.close_future: Optional[asyncio.Future[Any]] = None
        # abandon() runs on any thread: closing and the one engine close it
        # or start_close starts are decided under this lock.
        self.close_lock = threading.Lock()
        # Records of this loop iteration, handed to the engine in one
        # kp_send_many call (a foreign call costs microseconds), are packed
        # by self.fast (kpush/_fast.py), which also resolves the futures of
        # successful records. topics: topic → its UTF-8 bytes, which the
        # packed records point into (an entry is never removed).
        self.topics: dict[str, bytes] = {}
        running_loop = None if isinstance(loop, asyncio.BaseEventLoop) else asyncio._get_running_loop
        # reading: _on_readable is running; the records the tasks it wakes
        # send are handed over when it ends, not one loop iteration later.
        self.reading = False
        self.fast = Fast(self.futures, self.topics, _future_factory(loop), self._schedule,
                         RecordMetadata, loop, running_loop)
        if not HAVE_SPEEDUPS:
            self.fast.view = memoryview(self.ffi.buffer(self.cbuf))
        loop.add_reader(self.fd, self._on_readable)

    def topic_bytes(self, topic: str) -> tuple[bytes, Optional[list]]:
        """The topic's UTF-8 bytes (cached; the fast path needs the entry)
        and, past the cache's size, a list of it to keep alive with the
        record; raises like prepare()."""
        tb = self.topics.get(topic)
        if tb is not None:
            return tb, None
        from ._records import prepare

        tb = prepare(self.ffi, topic, None).topic
        if len(self.topics) < 4096:
            self.topics[topic] = tb  # kept alive by the entry
            return tb, None
        return tb, [tb]

    def send_pending(self) -> None:
        """Hand this iteration's records to the engine, in order, in one call."""
        t = self.fast.take()
        if t is None:
            return
        recs, n, keep = t
        rc = self.lib.kp_send_many(self.h, self.ffi.cast("kp_rec *", self.ffi.from_buffer(recs)), n)
        del keep  # the engine has copied every buffer
        if rc:
            for rid in memoryview(recs).cast("q")[:: _ffi.REC_FIELDS]:
                entry = self.futures.pop(rid, None)
                if entry is not None:
                    fut, topic = split(entry)
                    if not fut.done():
                        fut.set_exception(NotWrittenError("kpush: producer closed", "closed", topic))

    def _schedule(self) -> None:
        """Called by fast when a tick's first record arrives: hand the
        tick's records over at its end (or at the end of the reader)."""
        if not self.reading:
            self.loop.call_soon(self.send_pending)

    def new_id(self) -> int:
        """A fresh id for a record or a control request."""
        return self.fast.next_id()

    def _on_readable(self) -> None:
        # The tasks resolve() wakes run here and may send again: their
        # records are handed over when the reader ends, in this loop
        # iteration; scheduled with call_soon they would wait for the next
        # one (an epoll_wait and a Handle, ~10 µs of the C=1 round trip).
        self.reading = True
        try:
            self._read_completions()
        finally:
            self.reading = False
            self.send_pending()

    def _read_completions(self) -> None:
        # Read the pipe before draining, so a wake-up written after the last
        # drain is never consumed without its completion.
        try:
            os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            pass
        lib, h, buf, msgbuf, addr, resolve = self.lib, self.h, self.cbuf, self.msgbuf, self.caddr, self.fast.resolve
        finished = False
        while True:
            n = lib.kp_drain(h, buf, _CAP, msgbuf, _MSGCAP)
            i = 0
            while i < n:
                # Successful records' futures in one C call (kpush/_speedups.c);
                # it stops at any other kind of completion, handled here.
                i = resolve(addr, n, i)
                if i < n:
                    finished = self._complete(*_COMPLETION.unpack_from(self.ffi.buffer(buf), i * _COMPLETION.size)) or finished
                    i += 1
            # Drain until empty: kp_drain also stops early when the
            # messages fill msgbuf, and the pipe is written again only after
            # the queue went empty, so stopping at n < _CAP could strand
            # completions (and their futures) with no wake-up to come.
            if n == 0:
                break
        if finished:
            self._finish()
        fatal = self.fast.pop_error()
        if fatal is not None:
            raise fatal  # a KeyboardInterrupt/SystemExit from a task step resolve() ran

    def _complete(self, rid: int, offset: int, ts: int, partition: int, kind: int, cause: int, code: int, moff: int, mlen: int) -> bool:
        """Resolve one completion of any kind; True when it ends the producer."""
        futures = self.futures
        if kind == _KIND_OK:
            entry = futures.pop(rid, None)
            if entry is not None:
                fut, topic = split(entry)
                if not fut.done():
                    fut.set_result(_new_tuple(RecordMetadata, (topic, partition, offset, ts)))
            return False
        if kind == _ffi.KIND_TOKEN:
            self._token(rid)
            return False
        finished = False
        if kind == _ffi.KIND_CLOSE:
            if cause == _CAUSE_CLOSED:
                # A second engine close: the first one's completion
                # finishes the producer and resolves this future.
                entry = futures.pop(rid, None)
                if entry is not None and self.close_future is None:
                    self.close_future = split(entry)[0]
                return False
            finished = True
        entry = futures.pop(rid, None)
        if entry is None:
            return finished
        fut, topic = split(entry)
        msg = self.ffi.unpack(self.msgbuf + moff, mlen).decode("utf-8", "replace") if mlen else ""
        if fut.done():
            return finished
        if kind <= _ffi.KIND_UNKNOWN:
            fut.set_exception(make_error(kind == _ffi.KIND_UNKNOWN, cause, code, msg, topic, partition))
        elif kind == _ffi.KIND_PARTITIONS:
            if cause:
                fut.set_exception(make_error(False, cause, code, msg, topic, -1))
            else:
                fut.set_result(offset)
        elif cause and kind == _ffi.KIND_FLUSH:  # flush or close
            name = CAUSES[cause] if cause < len(CAUSES) else "other"
            cls = KafkaTimeoutError if name == "deadline_exceeded" else KafkaError
            fut.set_exception(cls(msg, name))
        else:
            fut.set_result(None)
        return finished

    def _finish(self) -> None:
        self.loop.remove_reader(self.fd)
        self.closed = True
        cf = self.close_future
        for fut, topic in map(split, self.futures.values()):
            if not fut.done() and fut is not cf:
                fut.set_exception(NotWrittenError("kpush: producer closed", "closed", topic))
        self.futures.clear()
        if cf is not None and not cf.done():
            cf.set_result(None)  # the close that ran was abandon()'s
        self.lib.kp_free(self.h)

    def _token(self, req: int) -> None:
        async def answer() -> None:
            tok, err = b"", b""
            try:
                t = self.token_provider.token()
                if asyncio.iscoroutine(t) or isinstance(t, asyncio.Future):
                    t = await t
                tok = str(t).encode()
            except Exception as e:  # the error goes to the engine as the auth failure's cause
                err = (f"token provider: {type(e).__name__}: {e}").encode()
            if not self.closed:
                self.lib.kp_token(self.h, req, tok, len(tok), err, len(err))

        self.loop.create_task(answer())

    def control(self, kind: str, timeout: Optional[float], topic: Optional[str] = None) -> asyncio.Future[Any]:
        """Start a flush, close or partition lookup; its future resolves on the loop."""
        self.send_pending()
        fut = self.loop.create_future()
        rid = self.new_id()
        self.futures[rid] = (fut, topic)
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        if kind == "flush":
            self.lib.kp_flush_async(self.h, rid, ms)
        elif kind == "close":
            self.lib.kp_close_async(self.h, rid, ms)
        else:
            tb = (topic or "").encode()
            self.lib.kp_partitions_async(self.h, rid, tb, len(tb), ms)
        return fut

    def start_close(self, timeout: Optional[float]) -> asyncio.Future[Any]:
        """Begin closing once; later calls return the same future. After
        abandon(), the future resolves when abandon's close finishes."""
        with self.close_lock:
            if self.close_future is None:
                if self.closing:  # abandon() started the engine's close
                    self.close_future = self.loop.create_future()
                else:
                    self.closing = True
                    self.close_future = self.control("close", timeout)
            return self.close_future

    def abandon(self) -> None:
        """Close from any thread (garbage collection): fail fast, resolve all."""
        with self.close_lock:
            if self.closing:
                return
            self.closing = True
        self.lib.kp_close_async(self.h, 0, 0)
        if self.loop.is_closed():
            # No reader will ever run to call kp_free (a producer collected
            # after its loop closed): free the handle now, or its pipe's two
            # fds stay open; the close's completion, pushed later, is dropped
            # by the closed queue.
            self.closed = True
            self.lib.kp_free(self.h)
