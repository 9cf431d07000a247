"""Checking and converting record fields before they reach the engine.

Everything here runs before the engine sees the record, so a bad argument
raises TypeError/ValueError at the call and nothing is buffered.
"""

from __future__ import annotations

import struct
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = ["Buffer", "Headers", "RecordMetadata", "Prepared", "prepare"]

#: Accepted types for a key or value.
Buffer = Union[bytes, bytearray, memoryview, str]
#: Accepted header forms: a list of (key, value) pairs or a mapping.
Headers = Union[Sequence[Tuple[str, Optional[Buffer]]], Mapping[str, Optional[Buffer]]]

_MAX_INT32 = 2**31 - 1
_pack_len = struct.Struct("<I").pack
_pack_vlen = struct.Struct("<i").pack


class RecordMetadata(NamedTuple):
    """A record's acknowledgement (field-compatible with aiokafka's)."""

    topic: str
    partition: int
    offset: int
    #: Create time in milliseconds since the epoch, as sent.
    timestamp: int

    @property
    def topic_partition(self) -> Tuple[str, int]:
        """(topic, partition), like aiokafka's TopicPartition."""
        return (self.topic, self.partition)

    @property
    def timestamp_type(self) -> int:
        """0: CreateTime (kpush always sends create times)."""
        return 0

    @property
    def log_start_offset(self) -> int:
        """-1: not reported."""
        return -1


class Prepared(NamedTuple):
    """A record ready for kp_send: buffers and their lengths (-1 for None)."""

    topic: bytes
    key: Any
    key_len: int
    value: Any
    value_len: int
    headers: Any
    headers_len: int
    nheaders: int
    partition: int
    timestamp_ms: int


_topics: dict[str, bytes] = {}


def _buffer(ffi: Any, name: str, v: Any) -> Tuple[Any, int]:
    t = type(v)
    if t is bytes:
        return v, len(v)
    if v is None:
        return ffi.NULL, -1
    if t is str or isinstance(v, str):
        try:
            b = v.encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"kpush: {name} is not encodable as UTF-8: {e}") from None
        return b, len(b)
    if isinstance(v, (bytes, bytearray, memoryview)):
        mv = memoryview(v)
        if not mv.c_contiguous:
            raise ValueError(f"kpush: {name} memoryview must be C-contiguous")
        if mv.nbytes == 0:
            return b"", 0
        return ffi.from_buffer(mv), mv.nbytes
    raise TypeError(f"kpush: {name} must be bytes, bytearray, memoryview, str or None, not {t.__name__}")


def _header_value(v: Any) -> Optional[bytes]:
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"kpush: header value must be bytes, bytearray, memoryview, str or None, not {type(v).__name__}")


def _headers(h: Any) -> Tuple[bytes, int]:
    if isinstance(h, Mapping):
        items = list(h.items())
    elif isinstance(h, (list, tuple)):
        items = list(h)
    else:
        raise TypeError(f"kpush: headers must be a list of (str, bytes) pairs or a dict, not {type(h).__name__}")
    parts = []
    for pair in items:
        if not isinstance(pair, tuple) or len(pair) != 2:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise TypeError(f"kpush: each header must be a (str, bytes) pair, not {pair!r}")
        k, v = pair
        if not isinstance(k, str):
            raise TypeError(f"kpush: header key must be a str, not {type(k).__name__}")
        try:
            kb = k.encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"kpush: header key is not encodable as UTF-8: {e}") from None
        vb = _header_value(v)
        parts.append(_pack_len(len(kb)))
        parts.append(kb)
        if vb is None:
            parts.append(_pack_vlen(-1))
        else:
            parts.append(_pack_vlen(len(vb)))
            parts.append(vb)
    return b"".join(parts), len(items)


def prepare(
    ffi: Any,
    topic: Any,
    value: Any,
    key: Any = None,
    headers: Any = None,
    partition: Any = None,
    timestamp_ms: Any = None,
) -> Prepared:
    """Check one record's arguments and convert them for kp_send."""
    tb = _topics.get(topic) if type(topic) is str else None
    if tb is None:
        if not isinstance(topic, str):
            raise TypeError(f"kpush: topic must be a str, not {type(topic).__name__}")
        try:
            tb = topic.encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"kpush: topic is not encodable as UTF-8: {e}") from None
        if len(_topics) < 4096:
            _topics[topic] = tb
    v, vl = _buffer(ffi, "value", value)
    k, kl = _buffer(ffi, "key", key)
    if headers is None:
        hb, hl, nh = ffi.NULL, 0, 0
    else:
        hb, nh = _headers(headers)
        hl = len(hb)
        if nh == 0:
            hb = ffi.NULL
    if partition is None:
        p = -1
    else:
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise TypeError(f"kpush: partition must be an int or None, not {type(partition).__name__}")
        if not 0 <= partition <= _MAX_INT32:
            raise ValueError(f"kpush: partition must be between 0 and {_MAX_INT32}, not {partition}")
        p = partition
    if timestamp_ms is None:
        ts = -1
    else:
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
            raise TypeError(f"kpush: timestamp_ms must be an int or None, not {type(timestamp_ms).__name__}")
        if not 0 <= timestamp_ms < 2**63:
            raise ValueError(f"kpush: timestamp_ms must be non-negative milliseconds since the epoch, not {timestamp_ms}")
        ts = timestamp_ms
    return Prepared(tb, k, kl, v, vl, hb, hl, nh, p, ts)
