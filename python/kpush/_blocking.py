"""The blocking producer, for threaded (WSGI) applications.

Threads and ownership: any number of threads may call send() at once; each
call waits inside the engine with the GIL released (cffi releases it for
the whole foreign call), so other Python threads keep running.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

from . import _ffi
from ._config import build_settings
from ._core import engine_error, new_handle, stats
from ._errors import NotWrittenError, make_error
from ._records import Buffer, Headers, RecordMetadata, prepare

__all__ = ["Producer"]

_MSGCAP = 4096


class Producer:
    """A blocking Kafka producer: ``send`` waits for the acknowledgement.

    ``with Producer(bootstrap_servers="host:9092") as p: p.send("t", b"v")``.
    Same settings as kpush.aio.Producer. Safe for concurrent use by many
    threads; create one per process, after forking.
    """

    def __init__(self, bootstrap_servers: Any = "localhost:9092", **settings: Any) -> None:
        s = build_settings(bootstrap_servers, settings, type(self).__name__)
        if s.token_provider is not None:
            raise TypeError("Producer() sasl_oauth_token_provider needs the asyncio producer (kpush.aio)")
        self._ffi, self._lib, self._h = new_handle(s)
        self._closed = False

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check(self) -> None:
        _ffi.check_fork()
        if self._closed:
            raise NotWrittenError("kpush: producer closed", "closed")

    def send(
        self,
        topic: str,
        value: Optional[Buffer],
        key: Optional[Buffer] = None,
        headers: Optional[Headers] = None,
        partition: Optional[int] = None,
        timestamp_ms: Optional[int] = None,
    ) -> RecordMetadata:
        """Send one record and wait (GIL released) for its acknowledgement.
        Raises as kpush.aio.Producer.send."""
        self._check()
        ffi = self._ffi
        r = prepare(ffi, topic, value, key, headers, partition, timestamp_ms)
        out = ffi.new("kp_completion *")
        msg = ffi.new("char[]", _MSGCAP)
        rc = self._lib.kp_send_sync(
            self._h, r.topic, len(r.topic), r.key, r.key_len, r.value, r.value_len,
            r.headers, r.headers_len, r.nheaders, r.partition, r.timestamp_ms, out, msg, _MSGCAP,
        )
        if rc:
            raise NotWrittenError("kpush: producer closed", "closed", topic)
        if out.kind == _ffi.KIND_OK:
            return RecordMetadata(topic, out.partition, out.offset, out.timestamp_ms)
        text = ffi.unpack(msg + out.msg_off, out.msg_len).decode("utf-8", "replace")
        raise make_error(out.kind == _ffi.KIND_UNKNOWN, out.cause, out.code, text, topic, out.partition)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every record sent before this call has its outcome
        (records other threads send meanwhile are not waited for)."""
        self._check()
        err = self._ffi.new("char[]", _MSGCAP)
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        cause = self._lib.kp_flush(self._h, ms, err, _MSGCAP)
        if cause:
            raise engine_error(self._ffi, cause, err)

    def close(self, timeout: Optional[float] = None) -> None:
        """Flush (up to timeout seconds), then fail whatever is left."""
        if self._closed:
            return
        _ffi.check_fork()
        self._closed = True
        err = self._ffi.new("char[]", _MSGCAP)
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        self._lib.kp_close(self._h, ms, err, _MSGCAP)
        self._lib.kp_free(self._h)

    def partitions_for(self, topic: str, timeout: Optional[float] = 30.0) -> set[int]:
        """The topic's partition ids (one Metadata request, waiting with the
        GIL released); raises as kpush.aio.Producer.partitions_for."""
        if not isinstance(topic, str):
            raise TypeError(f"kpush: topic must be a str, not {type(topic).__name__}")
        self._check()
        ffi = self._ffi
        tb = topic.encode()
        code = ffi.new("int32_t *")
        err = ffi.new("char[]", _MSGCAP)
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        n = self._lib.kp_partitions(self._h, tb, len(tb), ms, code, err, _MSGCAP)
        if n < 0:
            raise make_error(False, -n, code[0], ffi.string(err).decode("utf-8", "replace"), topic, -1)
        return set(range(n))

    def stats(self) -> dict[str, Any]:
        """A snapshot of the engine's counters."""
        if self._closed:
            return {}
        _ffi.check_fork()
        return stats(self._ffi, self._lib, self._h)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn("kpush: Producer garbage-collected without close()", ResourceWarning, source=self)
            if not _ffi._forked:
                self._closed = True
                # Close in the background (the collector's thread must not
                # wait on the network) and free the handle now: kp_free
                # closes the completion pipe's two fds, and the close's
                # completion, pushed after, is dropped (nobody drains it).
                self._lib.kp_close_async(self._h, 0, 0)
                self._lib.kp_free(self._h)
