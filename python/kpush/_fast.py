"""The per-record path of one Core: the C extension, or its Python twin.

``Fast`` is ``kpush._speedups.Fast`` (kpush/_speedups.c) when that
extension was built, else ``PyFast`` below, which has the same interface and
behaviour (the C one is a few microseconds per record cheaper; CI builds it
and fails without it, see HAVE_SPEEDUPS; KPUSH_NO_SPEEDUPS=1 forces the
twin, to test it). Both belong to one Core and run only on its loop's thread.
"""

from __future__ import annotations

import os
import struct
from threading import get_ident
from array import array
from typing import Any, Callable, Optional

from . import _ffi

_COMPLETION = struct.Struct("=Qqqiiiiqq")  # kp_completion
_new_tuple = tuple.__new__


class PyFast:
    """Pure-Python twin of ``kpush._speedups.Fast``: see its docstrings."""

    __slots__ = ("pending", "keep", "futures", "topics", "new_future", "schedule", "md_type", "seq", "view", "loop", "running_loop")

    def __init__(self, futures: dict, topics: dict, new_future: Callable[[], Any], schedule: Callable[[], Any], md_type: type,
                 loop: Any, running_loop: Any) -> None:
        self.pending = array("q")
        self.keep: list[Any] = []
        self.futures, self.topics, self.new_future, self.schedule, self.md_type = futures, topics, new_future, schedule, md_type
        self.loop, self.running_loop = loop, running_loop
        self.seq = 0
        #: the completion buffer as a memoryview (set by Core): resolve()
        #: reads it, as the C version reads the address it is given.
        self.view: Any = None

    def __len__(self) -> int:
        return len(self.pending) // _ffi.REC_FIELDS

    def send(self, mode: int, topic: Any, value: Any, key: Any, headers: Any, partition: Any, timestamp_ms: Any) -> Any:
        """Buffer one fast-path record and return its future, else None."""
        off = _ffi.BYTES_DATA_OFFSET
        if not (type(value) is bytes and off is not None and headers is None and partition is None and timestamp_ms is None
                and (key is None or type(key) is bytes) and type(topic) is str):
            return None
        tb = self.topics.get(topic)
        if tb is None:
            return None
        if self.running_loop is not None:
            if self.running_loop() is not self.loop:
                return None
        elif self.loop._thread_id != get_ident():
            return None
        fut = self.new_future()
        rid = self.seq + 1
        self.futures[rid] = (fut, topic)
        self.seq = rid
        keep = self.keep
        keep.append(value)
        if key is None:
            kaddr, klen = 0, -1
        else:
            keep.append(key)
            kaddr, klen = id(key) + off, len(key)
        self._append((rid, id(tb) + off, len(tb), kaddr, klen, id(value) + off, len(value), 0, 0, 0, -1, -1, mode))
        return fut

    def _append(self, fields: Any) -> None:
        self.pending.extend(fields)
        if len(self.pending) == _ffi.REC_FIELDS:
            try:
                self.schedule()
            except BaseException:
                del self.pending[-_ffi.REC_FIELDS:]
                raise

    def push(self, fields: Any, owners: list) -> None:
        """Buffer one record packed by the general path (13 int64s)."""
        rec = array("q", bytes(fields))
        if len(rec) != _ffi.REC_FIELDS:
            raise ValueError("push() needs exactly one kp_rec (13 int64s)")
        self.keep.extend(owners)
        self.seq = max(self.seq, rec[0])
        self._append(rec)

    def take(self) -> Optional[tuple[bytes, int, list]]:
        """The buffered records as bytes, their count and owners; empties."""
        if not self.pending:
            return None
        recs, keep = self.pending.tobytes(), self.keep
        n = len(self.pending) // _ffi.REC_FIELDS
        self.pending, self.keep = array("q"), []
        return recs, n, keep

    def next_id(self) -> int:
        """A fresh id for a record or a control request."""
        self.seq += 1
        return self.seq

    def pop_error(self) -> None:
        """Always None: this twin resolves futures with set_result, which
        schedules their callbacks instead of running them."""
        return None

    def resolve(self, address: int, n: int, start: int) -> int:
        """Resolve successful records' futures from start; return the index
        of the first completion of another kind (or n)."""
        futures, view, size = self.futures, self.view, _COMPLETION.size
        i = start
        for rid, offset, ts, partition, kind, _, _, _, _ in _COMPLETION.iter_unpack(view[start * size : n * size]):
            if kind != 0:
                return i
            i += 1
            entry = futures.get(rid)
            if entry is None:
                continue
            if type(entry) is not tuple or len(entry) != 2:
                return i - 1
            del futures[rid]
            fut = entry[0]
            if not fut.done():
                # tuple.__new__: a namedtuple's own __new__ is a Python frame (~0.5 µs)
                fut.set_result(_new_tuple(self.md_type, (entry[1], partition, offset, ts)))
        return i


try:
    if os.environ.get("KPUSH_NO_SPEEDUPS") == "1":  # test the twin: KPUSH_NO_SPEEDUPS=1 pytest
        raise ImportError("KPUSH_NO_SPEEDUPS=1")
    from ._speedups import Fast  # type: ignore[attr-defined]

    from ._speedups import SendFuture  # type: ignore[attr-defined]

    HAVE_SPEEDUPS = True
except (ImportError, RuntimeWarning):
    # Built without a C compiler, a subinterpreter (ImportError), or a
    # free-threaded build's warning that the extension needs the GIL, made an
    # error by -W error: the Python twin.
    Fast = PyFast  # type: ignore[misc,assignment]
    HAVE_SPEEDUPS = False

    class SendFuture:  # type: ignore[no-redef]
        """Never instantiated without the extension (PyFast makes asyncio futures)."""

        topic: Any = None


def split(entry: Any) -> tuple[Any, Any]:
    """A futures entry as (future, topic): a SendFuture is its own entry."""
    if type(entry) is SendFuture:
        return entry, entry.topic
    return entry
