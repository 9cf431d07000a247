"""Records read back by a second client (kafka-python) byte for byte."""

from __future__ import annotations

import pytest

from conftest import CODEC_IDS, batch_codecs, consume, need
from kpush.aio import Producer

CODEC_MODULES = {"gzip": None, "snappy": ("snappy", "pip install python-snappy"),
                 "lz4": ("lz4", "pip install lz4"), "zstd": ("zstandard", "pip install zstandard"), "none": None}

CASES = [
    # (value, key, headers, expected value, expected key, expected headers)
    (b"plain", None, None, b"plain", None, []),
    (b"", b"", [], b"", b"", []),
    (None, b"tombstone-key", None, None, b"tombstone-key", []),
    ("unicode \u00e9\u4e2d", "k\u00e9", [("h1", b"v1"), ("h1", b"dup"), ("empty", b""), ("null", None)],
     "unicode \u00e9\u4e2d".encode(), "k\u00e9".encode(), [("h1", b"v1"), ("h1", b"dup"), ("empty", b""), ("null", None)]),
    (bytearray(b"\x00\xffbin"), memoryview(b"mv-key"), {"a": "x", "b": b"\x00"},
     b"\x00\xffbin", b"mv-key", [("a", b"x"), ("b", b"\x00")]),
    (bytes(range(256)) * 40, b"big", None, bytes(range(256)) * 40, b"big", []),
]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_round_trip_every_codec(broker, codec):
    if CODEC_MODULES[codec]:
        need(*CODEC_MODULES[codec])
    topic = f"codec-{codec}"
    async with Producer(bootstrap_servers=broker.bootstrap, compression_type=codec) as p:
        mds = [await p.send(topic, v, key=k, headers=h) for v, k, h, *_ in CASES]
        mds += [await p.send_nowait(topic, v, key=k, headers=h) for v, k, h, *_ in CASES]
    got = consume(broker.bootstrap, topic, len(mds))
    by_offset = {r.offset: r for r in got}
    assert len(by_offset) == len(mds)
    for md, (_, _, _, ev, ek, eh) in zip(mds, CASES + CASES):
        assert md.topic == topic and md.partition == 0
        r = by_offset[md.offset]
        assert r.value == ev
        assert r.key == ek
        assert [(hk, hv) for hk, hv in r.headers] == eh
        assert r.timestamp == md.timestamp
    # The broker stored (and returns) batches in the codec asked for: a
    # dropped compression_type would round-trip the same bytes uncompressed.
    codecs = batch_codecs(broker.bootstrap, topic, len(mds))
    assert codecs and set(codecs) == {CODEC_IDS[codec]}, codecs


async def test_round_trip_partition_and_timestamp(broker):
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        md = await p.send("rt", b"to-2", partition=2, timestamp_ms=1_600_000_000_123)
        assert (md.partition, md.timestamp) == (2, 1_600_000_000_123)
        keyed = [await p.send("rt", b"x", key=b"same") for _ in range(5)]
    assert len({m.partition for m in keyed}) == 1
    got = {(r.partition, r.offset): r for r in consume(broker.bootstrap, "rt", 6)}
    r = got[(2, md.offset)]
    assert (r.value, r.timestamp) == (b"to-2", 1_600_000_000_123)
