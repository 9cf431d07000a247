"""asyncio front ends over the kpush engine.

``Producer`` is kpush's own API; ``AIOKafkaProducer`` takes aiokafka's
constructor keywords and methods, so code written for aiokafka changes one
import.

Cancellation (``await producer.send(...)`` in a task that is cancelled)
follows Go's ``Producer.Send`` and its context exactly: if the record has
not been sent yet it is withdrawn (never written); if it is in flight its
eventual outcome is dropped (it may or may not be written). A future from
``send_nowait`` (or aiokafka-style ``send``) is not a task: cancelling it
only drops the outcome; the record is still sent, in order.

A producer belongs to the event loop that started it; call its methods from
that loop's thread only (elsewhere they raise WrongLoopError, nothing sent).
Any number of loops (threads) may each run their own producers.
"""

from __future__ import annotations

import asyncio
import warnings
from array import array
from asyncio import _get_running_loop
from typing import Any, Callable, Optional

from . import _ffi
from ._config import build_settings
from ._core import Core, stats
from ._errors import NotWrittenError, WrongLoopError
from ._records import Buffer, Headers, RecordMetadata, prepare

__all__ = ["AIOKafkaProducer", "Producer", "RecordMetadata"]

_MODE_SEND = _ffi.MODE_SEND
_MODE_ORDERED = _ffi.MODE_ORDERED


class Producer:
    """An asyncio Kafka producer backed by kpush's Go engine.

    ``async with Producer(bootstrap_servers="host:9092") as p:`` starts it on
    the running loop and closes it on exit. Settings are keywords (see
    README: ``acks``, ``compression_type``, ``linger_ms``, ...); an unknown
    keyword raises TypeError naming it. Defaults are kpush's: acks=all,
    idempotence on, no compression, no linger.
    """

    def __init__(self, bootstrap_servers: Any = "localhost:9092", **settings: Any) -> None:
        self._settings = build_settings(bootstrap_servers, settings, type(self).__name__)
        self._core: Optional[Core] = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the engine on the running loop (loads it on first use)."""
        if self._core is not None:
            return
        self._core = Core(self._settings, asyncio.get_running_loop())

    async def __aenter__(self) -> "Producer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every record sent before this call has its outcome (its
        future is resolved); records sent while it waits are not waited for
        (as Go's Flush). Raises KafkaTimeoutError after ``timeout`` seconds."""
        core = self._live()
        await core.control("flush", timeout)

    async def close(self, timeout: Optional[float] = None) -> None:
        """Stop taking records, wait up to ``timeout`` seconds (None: until
        the delivery timeout) for buffered records, then fail the rest: never
        sent → NotWrittenError("closed"), in flight → OutcomeUnknownError.
        Every future is resolved when close returns. Safe to call twice."""
        core = self._core
        if core is None or core.closed:
            return
        _ffi.check_fork()
        if _get_running_loop() is not core.loop:
            raise _wrong_loop()
        await asyncio.shield(core.start_close(timeout))

    def stats(self) -> dict[str, Any]:
        """A snapshot of the engine's counters (records_sent, requests, ...)."""
        core = self._core
        if core is None or core.closed:
            return {}
        _ffi.check_fork()
        return stats(core.ffi, core.lib, core.h)

    async def partitions_for(self, topic: str, timeout: Optional[float] = 30.0) -> set[int]:
        """The topic's partition ids (one Metadata request)."""
        if not isinstance(topic, str):
            raise TypeError(f"kpush: topic must be a str, not {type(topic).__name__}")
        n = await self._live().control("partitions", timeout, topic)
        return set(range(n))

    def _live(self) -> Core:
        core = self._core
        if core is None:
            raise NotWrittenError("kpush: producer not started (use `async with` or await start())", "not_started")
        if core.closing:
            raise NotWrittenError("kpush: producer closed", "closed")
        if _ffi._forked:
            _ffi.check_fork()
        if _get_running_loop() is not core.loop:
            raise _wrong_loop()
        return core

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and not core.closing:
            warnings.warn(
                "kpush: Producer garbage-collected without close(); its records are being failed. "
                "Use `async with Producer(...)` or await close()",
                ResourceWarning,
                source=self,
            )
            if not _ffi._forked:
                core.abandon()

    # -- sending -----------------------------------------------------------

    def _start(self, mode: int, topic: Any, value: Any, key: Any, headers: Any, partition: Any, timestamp_ms: Any) -> tuple[asyncio.Future[RecordMetadata], int, Core]:
        core = self._core
        if core is None or core.closing or _ffi._forked:
            core = self._live()
        fast = core.fast  # checks the loop's thread (cheaper than _get_running_loop)
        # The common record (bytes value, bytes/None key, a topic seen
        # before, nothing else) is packed in C (kpush/_speedups.c).
        fut = fast.send(mode, topic, value, key, headers, partition, timestamp_ms)
        if fut is None:
            if _get_running_loop() is not core.loop:
                raise _wrong_loop()
            fut = _start_general(core, mode, topic, value, key, headers, partition, timestamp_ms)
        return fut, fast.seq, core

    async def send(
        self,
        topic: str,
        value: Optional[Buffer],
        key: Optional[Buffer] = None,
        headers: Optional[Headers] = None,
        partition: Optional[int] = None,
        timestamp_ms: Optional[int] = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement.

        Raises TypeError/ValueError for bad arguments (nothing is sent),
        NotWrittenError (definitely not written: safe to retry) or
        OutcomeUnknownError (may have been written). If the awaiting task is
        cancelled, a record not yet sent is withdrawn, a record in flight has
        its outcome dropped (as Go's Send with a cancelled context).
        """
        fut, rid, core = self._start(_MODE_SEND, topic, value, key, headers, partition, timestamp_ms)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.cancelled() and not core.closed:
                core.send_pending()  # the engine must know the record to withdraw it
                core.lib.kp_cancel(core.h, rid)
            raise

    def send_nowait(
        self,
        topic: str,
        value: Optional[Buffer],
        key: Optional[Buffer] = None,
        headers: Optional[Headers] = None,
        partition: Optional[int] = None,
        timestamp_ms: Optional[int] = None,
    ) -> "asyncio.Future[RecordMetadata]":
        """Hand one record to the engine and return a future of its
        RecordMetadata. Records sent this way keep their call order (per
        partition). Never blocks the loop; cancelling the future drops the
        outcome but does not withdraw the record."""
        return self._start(_MODE_ORDERED, topic, value, key, headers, partition, timestamp_ms)[0]


def _start_general(core: Core, mode: int, topic: Any, value: Any, key: Any, headers: Any, partition: Any, timestamp_ms: Any) -> "asyncio.Future[RecordMetadata]":
    """Check, convert and buffer a record the fast path does not take."""
    ffi = core.ffi
    r = prepare(ffi, topic, value, key, headers, partition, timestamp_ms)
    tb, keep = core.topic_bytes(topic)
    keep = keep or []
    fast = core.fast
    rid = fast.seq + 1
    fast.push(array("q", (rid, _ffi.address(ffi, tb, keep), len(tb), _ffi.address(ffi, r.key, keep), r.key_len,
                          _ffi.address(ffi, r.value, keep), r.value_len, _ffi.address(ffi, r.headers, keep),
                          r.headers_len, r.nheaders, r.partition, r.timestamp_ms, mode)), keep)
    fut = core.loop.create_future()
    core.futures[rid] = (fut, topic)
    if _writable(value) or _writable(key):
        # The engine copies a tick's records at its end; a buffer the
        # caller may still change (or resize: BufferError while
        # exported) is copied now, with the records before it.
        core.send_pending()
    return fut


def _writable(v: Any) -> bool:
    """Whether v is a buffer its owner can change after the call."""
    return isinstance(v, (bytearray, memoryview)) and not memoryview(v).readonly


def _wrong_loop() -> WrongLoopError:
    return WrongLoopError(
        "kpush: this producer belongs to the event loop that started it; it was used from another loop "
        "or thread (or with no loop running). Create one producer per event loop",
        "wrong_loop",
    )


_AIOKAFKA_MAP = {
    "client_id": "client_id",
    "acks": "acks",
    "compression_type": "compression_type",
    "linger_ms": "linger_ms",
    "max_request_size": "max_batch_bytes",
    "enable_idempotence": "enable_idempotence",
    "request_timeout_ms": "request_timeout_ms",
    "retry_backoff_ms": "retry_backoff_ms",
    "metadata_max_age_ms": "metadata_max_age_ms",
    "security_protocol": "security_protocol",
    "ssl_context": "ssl_context",
    "sasl_mechanism": "sasl_mechanism",
    "sasl_plain_username": "sasl_plain_username",
    "sasl_plain_password": "sasl_plain_password",
    "sasl_oauth_token_provider": "sasl_oauth_token_provider",
}
_AIOKAFKA_DEFAULT_BATCH = 16384


def _partitioner(p: Any) -> Optional[str]:
    if p is None:
        return None
    if isinstance(p, str):
        return p
    cls = p if isinstance(p, type) else type(p)
    if cls.__name__ == "DefaultPartitioner" and cls.__module__.split(".")[0] in ("aiokafka", "kafka"):
        return "murmur2"  # aiokafka's default: murmur2(key) like Java; kpush's sticky is the same for keyed records
    raise TypeError(
        "AIOKafkaProducer() partitioner: only aiokafka's DefaultPartitioner or one of 'murmur2', 'crc32', "
        f"'round_robin' map to kpush, not {p!r}"
    )


class AIOKafkaProducer:
    """aiokafka's ``AIOKafkaProducer`` over kpush: same keywords (those kpush
    supports), same methods. An unsupported keyword raises TypeError naming
    it. Defaults are kpush's (acks=all, idempotence on), safer than
    aiokafka's acks=1; pass ``acks=1`` to get aiokafka's.

    ``max_batch_size`` has no kpush equivalent (batches grow with load up to
    ``max_request_size``); only its aiokafka default (16384) is accepted.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: Any = "localhost",
        key_serializer: Optional[Callable[[Any], Any]] = None,
        value_serializer: Optional[Callable[[Any], Any]] = None,
        partitioner: Any = None,
        max_batch_size: int = _AIOKAFKA_DEFAULT_BATCH,
        **kw: Any,
    ) -> None:
        settings: dict[str, Any] = {}
        for name, v in kw.items():
            target = _AIOKAFKA_MAP.get(name)
            if target is None:
                raise TypeError(f"AIOKafkaProducer() got an unsupported keyword argument {name!r}")
            settings[target] = v
        if max_batch_size != _AIOKAFKA_DEFAULT_BATCH:
            raise TypeError(
                "AIOKafkaProducer() got an unsupported keyword argument 'max_batch_size': kpush batches grow "
                "with load up to max_request_size; drop it or set max_request_size"
            )
        part = _partitioner(partitioner)
        if part is not None:
            settings["partitioner"] = part
        if key_serializer is not None and not callable(key_serializer):
            raise TypeError("AIOKafkaProducer() key_serializer must be callable")
        if value_serializer is not None and not callable(value_serializer):
            raise TypeError("AIOKafkaProducer() value_serializer must be callable")
        self._key_ser = key_serializer
        self._value_ser = value_serializer
        self._p = Producer(bootstrap_servers, **settings)

    async def start(self) -> None:
        """Start the producer on the running loop."""
        await self._p.start()

    async def stop(self) -> None:
        """Flush and close (every pending future resolves)."""
        await self._p.close()

    async def __aenter__(self) -> "AIOKafkaProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def flush(self) -> None:
        """Wait until every record sent so far has its outcome."""
        await self._p.flush()

    async def partitions_for(self, topic: str) -> set[int]:
        """The topic's partition ids."""
        return await self._p.partitions_for(topic)

    def _ser(self, key: Any, value: Any) -> tuple[Any, Any]:
        if self._key_ser is not None:
            key = self._key_ser(key)
        if self._value_ser is not None:
            value = self._value_ser(value)
        return key, value

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: Optional[int] = None,
        timestamp_ms: Optional[int] = None,
        headers: Optional[Headers] = None,
    ) -> "asyncio.Future[RecordMetadata]":
        """Buffer one record; return a future of its RecordMetadata (await
        the coroutine, then the future, as with aiokafka)."""
        key, value = self._ser(key, value)
        return self._p.send_nowait(topic, value, key=key, headers=headers, partition=partition, timestamp_ms=timestamp_ms)

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: Optional[int] = None,
        timestamp_ms: Optional[int] = None,
        headers: Optional[Headers] = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement (cancellation as
        Producer.send)."""
        key, value = self._ser(key, value)
        return await self._p.send(topic, value, key=key, headers=headers, partition=partition, timestamp_ms=timestamp_ms)

    def stats(self) -> dict[str, Any]:
        """The engine's counters."""
        return self._p.stats()


