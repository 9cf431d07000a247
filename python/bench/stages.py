"""C=1 stage breakdown of `await producer.send()` (python/docs/internals.md, "Fifth round").

Stamps every record with CLOCK_MONOTONIC ns on both sides of the bridge —
Python here (time.monotonic_ns), Go through KPUSH_ENGINE_STAGES
(engine/stages.go) — joins them by record id and prints the median time
between consecutive stages, plus the same for `await p.flush()` with
nothing to flush. The broker is `kpush dev` in its own process, as in
bench/run.py.

    python python/bench/stages.py [--records 3000] [--flushes 2000]

Run it with the package to measure on PYTHONPATH (a source checkout built
in place: `python setup.py build_ext --inplace` and the engine's go build).
The stamps cost a few hundred ns per stage; the p50 it prints is the
instrumented one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--flushes", type=int, default=2000)
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--go-stamps", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import run  # bench/run.py: the broker

    tmp = tempfile.mkdtemp()
    binary = os.path.join(tmp, "kpush")
    subprocess.run(["go", "build", "-o", binary, "./cmd/kpush"], cwd=run.REPO, check=True)
    broker, bootstrap = run.start_broker(binary, ["bench:3"])
    try:
        stamps = os.path.join(tmp, "go.csv")
        env = dict(os.environ, KPUSH_ENGINE_STAGES=stamps)
        subprocess.run([sys.executable, __file__, "--child", "--bootstrap", bootstrap, "--records", str(args.records),
                        "--flushes", str(args.flushes), "--go-stamps", stamps], env=env, check=True)
    finally:
        broker.terminate()
        broker.wait()


def child(args) -> None:
    from kpush import _core
    from kpush.aio import Producer

    py: dict[int, dict[str, int]] = {}
    now = time.monotonic_ns
    cur = [0]  # the record (or flush) in flight: at C=1 there is one

    orig_pending, orig_readable = _core.Core.send_pending, _core.Core._on_readable

    def send_pending(self):
        row = py.setdefault(self.fast.seq, {})
        row.setdefault("py_send_many_in", now())
        orig_pending(self)
        row.setdefault("py_send_many_out", now())

    def on_readable(self):
        row = py.setdefault(cur[0], {})
        row.setdefault("py_reader_in", now())
        orig_readable(self)
        row.setdefault("py_reader_out", now())

    _core.Core.send_pending, _core.Core._on_readable = send_pending, on_readable

    async def go() -> tuple[list[int], list[int]]:
        lat, flat = [], []
        async with Producer(args.bootstrap) as p:
            for _ in range(50):
                await p.send("bench", b"w" * 100)
            core = p._core
            for _ in range(args.records):
                t0 = now()
                cur[0] = core.fast.seq + 1
                await p.send("bench", b"x" * 100)
                t1 = now()
                row = py.setdefault(core.fast.seq, {})
                row["py_send"], row["py_resumed"] = t0, t1
                lat.append(t1 - t0)
            for _ in range(args.flushes):
                t0 = now()
                cur[0] = core.fast.seq + 1
                await p.flush()
                t1 = now()
                row = py.setdefault(core.fast.seq, {})
                row["py_flush"], row["py_resumed"], row["flush"] = t0, t1, 1
                flat.append(t1 - t0)
        return lat, flat

    lat, flat = asyncio.run(go())
    from kpush import _ffi

    _ffi._lib.kp_profile_stop()  # writes the Go stamps
    gorows: dict[int, dict[str, int]] = {}
    with open(args.go_stamps) as f:
        for line in f:
            i, name, t = line.strip().split(",")
            gorows.setdefault(int(i), {})[name] = int(t)
    send_order = ["py_send", "py_send_many_in", "go_send_many_in", "go_try_in", "go_written", "go_send_many_out", "py_send_many_out",
                  "go_answered", "go_queued", "go_pipe", "py_reader_in", "go_drain_in", "go_drain_out",
                  "py_resumed"]
    flush_order = ["py_flush", "go_queued", "go_pipe", "py_reader_in", "go_drain_in", "py_reader_out", "py_resumed"]
    report("await send(), C=1", lat, [r | gorows.get(i, {}) for i, r in py.items() if "py_send" in r], send_order)
    report("await flush(), nothing to flush", flat, [r | gorows.get(i, {}) for i, r in py.items() if "flush" in r],
           flush_order)


def report(title: str, lat: list[int], rows: list[dict[str, int]], order: list[str]) -> None:
    full = [r for r in rows if all(k in r for k in order)]
    if rows and not full:
        print("missing:", {k: sum(k not in r for r in rows) for k in order})
    print(f"\n{title}: {len(lat)} timed, {len(full)} with every stamp; p50 {statistics.median(lat) / 1e3:.1f} µs")
    print("| from → to | median µs | p10–p90 µs |")
    print("|---|---:|---:|")
    for a, b in zip(order, order[1:]):
        d = sorted((r[b] - r[a]) / 1e3 for r in full)
        if d:
            print(f"| {a} → {b} | {statistics.median(d):.1f} | {d[len(d) // 10]:.1f}–{d[len(d) * 9 // 10]:.1f} |")
    d = sorted((r[order[-1]] - r[order[0]]) / 1e3 for r in full)
    if d:
        print(f"| total | {statistics.median(d):.1f} | {d[len(d) // 10]:.1f}–{d[len(d) * 9 // 10]:.1f} |")


if __name__ == "__main__":
    main()
