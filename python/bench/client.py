"""One benchmark run of one client, in its own process.

C coroutines each await one 100-byte record at a time until --seconds pass;
prints one JSON line: records acknowledged, errors, records lost (no outcome
by the end + grace), records/s, CPU µs per acknowledged record (this
process's rusage: Python plus engine threads), p50/p99 latency. With
--seq, values carry a sequence number so the driver can read them back.

Clients (each at its defaults, except acks=all where the default differs):
  kpush            kpush.aio.Producer, await p.send()
  aiokafka         AIOKafkaProducer(acks="all"), await send_and_wait()
  confluent-aio    confluent_kafka.aio.AIOProducer({"acks": "all"}), await (await produce())
  confluent-recipe confluent_kafka.Producer + a poll thread + call_soon_threadsafe futures
  aiokafka-queue   the seed's asyncio.Queue(1000) + one worker over aiokafka (acks="all")
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import threading
import time

VALUE = b"x" * 100


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def value_for(seq: bool, i: int) -> bytes:
    if not seq:
        return VALUE
    s = b"%d" % i
    return s + b"." * (100 - len(s))


async def make_sender(name: str, bootstrap: str, topic: str):
    """Return (send(value) coroutine, close coroutine) for a client."""
    if name == "kpush":
        from kpush.aio import Producer

        p = Producer(bootstrap_servers=bootstrap)
        await p.start()
        return (lambda v: p.send(topic, v)), p.close
    if name in ("aiokafka", "aiokafka-queue"):
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await p.start()
        if name == "aiokafka":
            return (lambda v: p.send_and_wait(topic, v)), p.stop
        return queue_sender(p, topic)
    if name == "confluent-aio":
        from confluent_kafka.aio import AIOProducer

        p = AIOProducer({"bootstrap.servers": bootstrap, "acks": "all"})

        async def send(v):
            return await (await p.produce(topic, v))

        async def close():
            await p.flush()
            await p.close()

        return send, close
    if name == "confluent-recipe":
        return recipe_sender(bootstrap, topic)
    raise SystemExit(f"unknown client {name}")


def recipe_sender(bootstrap: str, topic: str):
    """The seed's wrapper: confluent Producer, a poll thread, call_soon_threadsafe."""
    import confluent_kafka

    loop = asyncio.get_running_loop()
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            p.poll(0.1)

    t = threading.Thread(target=poll, daemon=True)
    t.start()

    def send(v):
        fut = loop.create_future()

        def ack(err, msg):
            if err:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(confluent_kafka.KafkaException(err)))
            else:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(msg.offset()))

        while True:
            try:
                p.produce(topic, v, on_delivery=ack)
                break
            except BufferError:
                p.poll(0.01)
        return fut

    async def close():
        await loop.run_in_executor(None, p.flush, 30)
        stop.set()
        t.join()

    return send, close


def queue_sender(producer, topic: str):
    """The seed's queue workaround: one worker, logs and drops on error."""
    queue: asyncio.Queue = asyncio.Queue(1000)
    state = {"dropped": 0}

    async def worker():
        while True:
            event, (t, value, key) = await queue.get()
            try:
                await producer.send_and_wait(t, value, key=key)
                event.ok = True
            except Exception:
                logging.getLogger("seed").warning("send failed; dropping record")
                state["dropped"] += 1
                event.ok = False
            finally:
                event.set()

    task = asyncio.ensure_future(worker())

    async def send(v):
        event = asyncio.Event()
        event.ok = False
        await queue.put((event, (topic, v, None)))
        await event.wait()
        if not event.ok:
            raise RuntimeError("dropped")  # the seed's endpoint would not even know; counted as dropped

    async def close():
        task.cancel()
        await producer.stop()

    send.state = state
    return send, close


async def run(args) -> dict:
    send, close = await make_sender(args.client, args.bootstrap, args.topic)
    # Warm-up: metadata, connections.
    for _ in range(3):
        await send(value_for(args.seq, -1))
    lat: list[float] = []
    acked: list[int] = []
    errors = 0
    started = 0
    counter = [0]
    stop_at = 0.0

    async def worker():
        nonlocal errors, started
        while time.monotonic() < stop_at:
            i = counter[0]
            counter[0] += 1
            started += 1
            t0 = time.perf_counter()
            try:
                await send(value_for(args.seq, i))
            except Exception:
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)
            acked.append(i)

    c0, w0 = cpu(), time.monotonic()
    stop_at = w0 + args.seconds
    tasks = [asyncio.ensure_future(worker()) for _ in range(args.c)]
    done, pending = await asyncio.wait(tasks, timeout=args.seconds + args.grace)
    wall, used = time.monotonic() - w0, cpu() - c0
    lost = 0
    for t in pending:
        t.cancel()
    lost = started - len(acked) - errors
    try:
        await asyncio.wait_for(close(), 30)
    except Exception:
        pass
    lat.sort()
    n = len(acked)
    return {
        "client": args.client, "c": args.c, "acked": n, "errors": errors, "lost": lost,
        "records_per_s": n / wall if wall else 0, "cpu_us_per_record": used * 1e6 / n if n else None,
        "p50_ms": lat[n // 2] * 1e3 if n else None, "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else None,
        "acked_ids": acked if args.seq else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="bench")
    ap.add_argument("--c", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--seq", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    res = asyncio.run(run(args))
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
