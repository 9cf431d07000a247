"""The Python package against real Apache Kafka (one KRaft node on 127.0.0.1).

The same checks as the fake-cluster tests (round trip of every codec read
back byte for byte, 10,000 coroutines exactly once in order per key, a
send_nowait pipeline, the seed's two code shapes, typed engine rejections,
the blocking producer), run against a broker started by `cmd/kafkalocal`
(jars from Maven Central, cached), plus a fault run: the broker's JVM is
frozen (SIGSTOP) for 5 s mid-stream and every future must resolve, every
acknowledged record be in the log once.

Enabled with KPUSH_REAL_KAFKA=1 (`.ci/python` sets it under CI=true);
otherwise every test here skips with one line naming that command. The
tests count records of fixed topics from the beginning, so they always start
a broker of their own (KPUSH_KAFKA_SEEDS is not used here). The broker
process is stopped in teardown, and is killed by the kernel if pytest dies
(PR_SET_PDEATHSIG; the JVM is tied to kafkalocal the same way), so it never
outlives the tests.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Iterator, Optional

import pytest

import test_bad_input
import test_blocking
import test_concurrency
import test_error_causes
import test_roundtrip
import test_seed
from test_cancel_close import wait_for
from test_faults import start_stream
from conftest import CI, REPO, TOPICS, _pump, _readline, _wait_threads, consume, end_offsets, need
from kpush import KafkaError, NotWrittenError
from kpush.aio import Producer

ENABLE = "KPUSH_REAL_KAFKA=1 bash .ci/python (needs Java 17+; Maven the first time)"
ENABLED = os.environ.get("KPUSH_REAL_KAFKA") == "1"


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGKILL to the child when pytest dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: teardown still stops it


class RealKafka:
    """One real Kafka node run by cmd/kafkalocal."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.bootstrap = ""
        self.jvm = 0  # the broker JVM's pid (ours only)

    def start(self, tmp: str, timeout: float = 600.0) -> None:
        binary = os.path.join(tmp, "kafkalocal")
        subprocess.run(["go", "build", "-o", binary, "./cmd/kafkalocal"], cwd=REPO, check=True, timeout=600)
        self.proc = subprocess.Popen([binary, "-nodes", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, preexec_fn=_die_with_parent)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            line = _readline(lines, deadline)
            seen.append(line)
            if line.startswith("node 0:") and " pid " in line:
                self.jvm = int(line.split(" pid ", 1)[1].split()[0])
            if line.startswith("bootstrap:"):
                self.bootstrap = line.split(":", 1)[1].strip()
                return
            if not line:  # exited, or the deadline passed
                self.stop()
                raise RuntimeError("kafkalocal did not start (Java 17+ and Maven needed):\n" + "".join(seen[-30:]))

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            if self.jvm:
                # A JVM left frozen (a test failed between pause and resume)
                # would sit on kafkalocal's SIGTERM until the 60 s kill below.
                try:
                    os.kill(self.jvm, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            p.send_signal(signal.SIGTERM)  # kafkalocal stops the JVM and removes its data
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()  # the JVM has Pdeathsig SIGKILL: it dies with kafkalocal
                p.wait(timeout=15)

    def pause(self) -> None:
        """Freeze the broker JVM and return once all its threads are stopped."""
        os.kill(self.jvm, signal.SIGSTOP)
        _wait_threads(self.jvm, stopped=True)

    def resume(self) -> None:
        os.kill(self.jvm, signal.SIGCONT)
        _wait_threads(self.jvm, stopped=False)


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create name → partition-count topics (replication factor 1) with kafka-python."""
    need("kafka", "pip install kafka-python")
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()], timeout_ms=60_000)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


@pytest.fixture(scope="module")
def real_kafka(tmp_path_factory) -> Iterator[RealKafka]:
    """A real Kafka node with every test topic (TOPICS)."""
    if not ENABLED:
        if CI:
            pytest.fail("real Kafka tests must run under CI=true: set KPUSH_REAL_KAFKA=1 (.ci/python does)")
        pytest.skip("real Kafka broker test; enable with: " + ENABLE)
    k = RealKafka()
    k.start(str(tmp_path_factory.mktemp("kafkalocal")))
    try:
        create_topics(k.bootstrap, TOPICS | {"freeze": 3})
        yield k
    finally:
        k.stop()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_real_round_trip_every_codec(real_kafka, codec):
    await test_roundtrip.test_round_trip_every_codec(real_kafka, codec)


# The fake-cluster tests whose checks run unchanged on real Kafka. The node
# runs with auto.create.topics.enable=false, so an unknown topic is refused
# (test_engine_rejections_are_typed); Kafka's default message.max.bytes
# (1,048,588) refuses a 1 MiB record (test_broker_error_has_its_name_and_code).
SHARED = [
    (test_roundtrip, "test_round_trip_partition_and_timestamp"),
    (test_concurrency, "test_10000_coroutines_exactly_once_in_order_per_key"),
    (test_concurrency, "test_send_nowait_pipeline_in_call_order"),
    (test_seed, "test_seed_handlers_every_record_once"),
    (test_seed, "test_seed_queue_worker_every_record_once"),
    (test_seed, "test_aiokafka_send_returns_future_and_partitions_for"),
    (test_bad_input, "test_engine_rejections_are_typed"),
    (test_error_causes, "test_broker_error_has_its_name_and_code"),
]


@pytest.mark.parametrize("module,name", SHARED, ids=[name for _, name in SHARED])
async def test_real_shared(real_kafka, module, name):
    await getattr(module, name)(real_kafka)


def test_real_blocking_producer_many_threads(real_kafka):
    test_blocking.test_blocking_producer_many_threads(real_kafka)


async def test_real_broker_frozen_mid_stream(real_kafka):
    """The JVM frozen for 5 s under a stream of send_nowait: every future
    resolves (acknowledged, or a typed KafkaError), and every acknowledged
    record is in the log exactly once at the offset it was given."""
    futs: list = []
    async with Producer(bootstrap_servers=real_kafka.bootstrap, delivery_timeout_ms=60_000,
                        request_timeout_ms=3_000) as p:
        await p.send("freeze", b"warm-up")
        stop, task = start_stream(p, "freeze", futs, keys=30)
        await wait_for(lambda: len(futs) > 2000, what="sends under way")
        try:
            # pause() inside the try: if it raises after SIGSTOP (its wait for
            # the threads timed out), the JVM is still resumed.
            real_kafka.pause()
            frozen_at = len(futs)
            await asyncio.sleep(5)
            assert len(futs) > frozen_at, "the event loop stalled while the broker was frozen"
        finally:
            real_kafka.resume()
        resumed_at = len(futs)
        await wait_for(lambda: len(futs) > resumed_at + 2000, what="sends after the freeze")
        stop.set()
        await task
        _, pending = await asyncio.wait([f for _, f in futs], timeout=90)
        assert not pending, f"{len(pending)} futures never resolved"
    for _, f in futs:
        assert f.exception() is None or isinstance(f.exception(), KafkaError), repr(f.exception())
    ok = {i: f.result() for i, f in futs if f.exception() is None}
    assert any(i >= resumed_at for i in ok), "nothing acknowledged after the freeze"
    total = sum(end_offsets(real_kafka.bootstrap, "freeze").values())
    logged = consume(real_kafka.bootstrap, "freeze", total, timeout=90)
    assert len(logged) == total
    # Idempotent: no record twice in the log, even though requests were resent after the freeze.
    dup = [v for v, n in Counter(r.value for r in logged).items() if n > 1]
    assert not dup, f"{len(dup)} records written twice, e.g. {dup[:3]}"
    # NotWrittenError promises the record was never written: none may be in the log.
    values = {r.value for r in logged}
    not_written = [i for i, f in futs if isinstance(f.exception(), NotWrittenError)]
    wrongly = [i for i in not_written if b"%d" % i in values]
    assert not wrongly, f"{len(wrongly)} records failed as NotWrittenError are in the log, e.g. {wrongly[:3]}"
    at = {(r.partition, r.offset): r.value for r in logged}
    for i, md in ok.items():
        assert at.get((md.partition, md.offset)) == b"%d" % i, f"record {i} acknowledged but not in the log"
    # Per key, the log holds the acknowledged records in send order.
    by_key: dict[bytes, list[int]] = {}
    for r in sorted(logged, key=lambda r: (r.partition, r.offset)):
        if r.key is not None:
            by_key.setdefault(r.key, []).append(int(r.value))
    for k, vs in by_key.items():
        assert vs == sorted(vs), f"key {k!r} out of order in the log"
