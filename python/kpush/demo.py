"""The seed's demo against an embedded broker: ``python -m kpush.demo``.

Starts a fake Kafka cluster inside this process (kpush's kafkatest, in the
same Go runtime as the engine), then runs N coroutines that each await one
send at a time — the way web endpoints use a producer — and prints what
they achieved. ``--bootstrap host:port`` uses a real cluster instead.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Optional

from . import _ffi
from .aio import Producer


def start_embedded_broker(topic: str, partitions: int) -> tuple[int, str]:
    """Start an in-process fake cluster; return (handle, bootstrap)."""
    ffi, lib = _ffi.load()
    buf = ffi.new("char[]", 4096)
    tb = topic.encode()
    h = lib.kp_dev_start(tb, len(tb), partitions, buf, 4096)
    text = ffi.string(buf).decode()
    if h == 0:
        raise RuntimeError(f"kpush: embedded broker did not start: {text}")
    return h, text


async def demo(bootstrap: str, topic: str, coroutines: int, seconds: float) -> None:
    """Run the workload and print records/s and latency."""
    async with Producer(bootstrap_servers=bootstrap) as p:
        await p.send(topic, b"warm-up")
        latencies: list[float] = []
        stop = time.monotonic() + seconds

        async def endpoint() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                await p.send(topic, b'{"event": "page_view", "user": 42}')
                latencies.append(time.perf_counter() - t0)

        t0 = time.monotonic()
        await asyncio.gather(*(endpoint() for _ in range(coroutines)))
        wall = time.monotonic() - t0
        latencies.sort()
        n = len(latencies)
        print(f"{n:,} records acknowledged by {coroutines:,} coroutines in {wall:.1f} s: "
              f"{n / wall:,.0f} records/s, p50 {latencies[n // 2] * 1e3:.2f} ms, "
              f"p99 {latencies[int(n * 0.99)] * 1e3:.2f} ms")
        print("stats:", {k: v for k, v in p.stats().items() if k in ("records_sent", "requests", "avg_batch_records")})


def main(argv: Optional[list[str]] = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m kpush.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", help="use this cluster instead of an embedded one")
    ap.add_argument("--topic", default="events")
    ap.add_argument("--coroutines", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    bootstrap = args.bootstrap
    handle = 0
    if not bootstrap:
        handle, bootstrap = start_embedded_broker(args.topic, 3)
        print(f"embedded broker on {bootstrap} (topic {args.topic}, 3 partitions)")
    try:
        asyncio.run(demo(bootstrap, args.topic, args.coroutines, args.seconds))
    finally:
        if handle:
            _ffi.load()[1].kp_dev_stop(handle)


if __name__ == "__main__":
    main()
