"""Many coroutines and pipelines: every record exactly once, in order per key."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict

from conftest import consume, end_offsets
from kpush.aio import Producer

COROUTINES = 10_000
PER_COROUTINE = 3
PIPELINE = int(os.environ.get("KPUSH_PIPELINE_RECORDS", "100000"))  # 1_000_000 for the full run


async def test_10000_coroutines_exactly_once_in_order_per_key(broker):
    before = sum(end_offsets(broker.bootstrap, "order").values())
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        async def worker(i: int) -> list:
            key = f"k{i}".encode()
            return [await p.send("order", f"{i}:{s}".encode(), key=key) for s in range(PER_COROUTINE)]

        results = await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(COROUTINES))), 300)
    total = COROUTINES * PER_COROUTINE
    got = consume(broker.bootstrap, "order", total, timeout=120)
    seen = defaultdict(list)
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        seen[r.key].append(r.value)
    assert sum(len(v) for v in seen.values()) == total
    for i in range(COROUTINES):
        assert seen[f"k{i}".encode()] == [f"{i}:{s}".encode() for s in range(PER_COROUTINE)]
    acked = {(m.partition, m.offset) for rs in results for m in rs}
    assert acked == {(r.partition, r.offset) for r in got}
    # consume() stops at `total`: a duplicate written beyond it shows only here.
    assert sum(end_offsets(broker.bootstrap, "order").values()) - before == total


async def test_send_nowait_pipeline_in_call_order(broker):
    before = sum(end_offsets(broker.bootstrap, "pipe").values())
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        futs = [p.send_nowait("pipe", b"v" * 100, key=b"%d" % (i % 16)) for i in range(PIPELINE)]
        mds = await asyncio.wait_for(asyncio.gather(*futs), 600)
    last: dict[int, int] = {}
    per_key_part: dict[bytes, int] = {}
    for i, md in enumerate(mds):
        key = b"%d" % (i % 16)
        assert per_key_part.setdefault(key, md.partition) == md.partition
        assert md.offset > last.get(md.partition, -1), "offsets must grow in call order"
        last[md.partition] = md.offset
    offsets = defaultdict(set)
    for md in mds:
        offsets[md.partition].add(md.offset)
    assert sum(len(s) for s in offsets.values()) == PIPELINE  # exactly one outcome, no duplicate offset
    assert sum(end_offsets(broker.bootstrap, "pipe").values()) - before == PIPELINE  # and nothing more in the log
