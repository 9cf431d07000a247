"""Fixtures: a `kpush dev` broker in its own process on 127.0.0.1.

The CLI is built once per session with `go build`; every broker process is
killed in teardown, so none outlives the tests. Tools that are missing skip
with the command that installs them, except under CI=true, where they fail.
"""

from __future__ import annotations

import importlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Iterator, Optional

import pytest

# The repository (for `go build ./cmd/kpush`); .ci/python runs a copy of the tests elsewhere.
REPO = os.environ.get("KPUSH_REPO") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CI = os.environ.get("CI") == "true"

TOPICS = {
    "rt": 3, "order": 8, "pipe": 4, "cancel": 1, "close": 3, "fault": 3, "bad": 1, "gc": 1,
    "fork": 1, "sigint": 1, "loops": 3, "asgi": 3, "seed": 3, "queue": 3, "sync": 3,
    "codec-none": 1, "codec-gzip": 1, "codec-snappy": 1, "codec-lz4": 1, "codec-zstd": 1, "review": 1, "flush": 3, "speedups": 3, "reader": 1, "rules": 3, "errors": 1,
}


def need(module: str, install: str):
    """Import module, or skip naming the install command (fail under CI=true)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if CI:
            pytest.fail(f"{module} is missing under CI=true: {install}")
        pytest.skip(f"{module} missing: {install}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kpush_bin(tmp_path_factory) -> str:
    """The kpush CLI, built once."""
    if shutil.which("go") is None:
        if CI:
            pytest.fail("go is missing under CI=true: install Go 1.26 (https://go.dev/dl)")
        pytest.skip("go missing: install Go 1.26 (https://go.dev/dl)")
    out = str(tmp_path_factory.mktemp("bin") / "kpush")
    subprocess.run(["go", "build", "-o", out, "./cmd/kpush"], cwd=REPO, check=True, timeout=600)
    return out


class Broker:
    """One `kpush dev` process; restartable on the same port."""

    def __init__(self, binary: str, port: int, topics: dict[str, int], extra: Optional[list] = None) -> None:
        self.binary, self.port, self.topics = binary, port, topics
        self.extra = extra or []
        self.proc: Optional[subprocess.Popen] = None
        self.bootstrap = f"127.0.0.1:{port}"
        self.ca_file = ""  # with --tls: the throwaway CA kpush dev wrote

    def start(self, timeout: float = 30.0) -> None:
        args = [self.binary, "dev", "-port", str(self.port)]
        for name, n in self.topics.items():
            args += ["-topic", f"{name}:{n}"]
        args += self.extra
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.lines: queue.Queue = queue.Queue()
            # A thread drains stdout (so the broker never blocks on a full pipe) into a queue.
            threading.Thread(target=_pump, args=(self.proc.stdout, self.lines), daemon=True).start()
            line = _readline(self.lines, deadline)
            if line.startswith("bootstrap:"):
                while "--tls" in self.extra and not self.ca_file:
                    more = _readline(self.lines, deadline)
                    if not more:
                        self.stop(signal.SIGKILL)
                        raise RuntimeError("kpush dev --tls printed no ssl.ca.location")
                    if more.startswith("ssl.ca.location:"):
                        self.ca_file = more.split(":", 1)[1].strip()
                return
            # The port may still be held by the previous process: retry.
            self.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"kpush dev did not start: {line!r}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=15)
        if p.stdout:
            p.stdout.close()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP) and return once every one of its
        threads is stopped. kill() returns before the signal has taken
        effect; on a busy machine the broker could still answer a request
        sent right after, which made tests that need an unanswered request
        flaky."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        _wait_threads(self.proc.pid, stopped=True)

    def resume(self) -> None:
        """Unfreeze the broker (SIGCONT) and return once it runs again."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        _wait_threads(self.proc.pid, stopped=False)


def _wait_threads(pid: int, stopped: bool, timeout: float = 30.0) -> None:
    """Wait until all of pid's threads are (or none is) in the stopped state
    ("T" in /proc/PID/task/TID/stat). Linux; elsewhere a short sleep."""
    base = f"/proc/{pid}/task"
    if not os.path.isdir(base):
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for tid in os.listdir(base):
            try:
                with open(f"{base}/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue  # the thread exited
        if states and all((st in "Tt") == stopped for st in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker {pid} threads not {'stopped' if stopped else 'running'}: {states}")
        time.sleep(0.001)


def _pump(f, q: "queue.Queue[str]") -> None:
    for line in f:
        q.put(line)
    q.put("")


def _readline(q: "queue.Queue[str]", deadline: float) -> str:
    try:
        return q.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        return ""


@pytest.fixture(scope="session")
def broker(kpush_bin) -> Iterator[Broker]:
    """A shared broker with every test topic."""
    b = Broker(kpush_bin, free_port(), TOPICS)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def own_broker(kpush_bin) -> Iterator[Broker]:
    """A broker of this test's own, for faults (pause, kill, restart)."""
    b = Broker(kpush_bin, free_port(), {"fault": 3, "cancel": 1, "close": 3})
    b.start()
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.resume()
    b.stop(signal.SIGKILL)


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list:
    """Read `count` records of topic from the beginning with kafka-python."""
    kafka = need("kafka", "pip install kafka-python")
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=int(timeout * 1000),
    )
    try:
        parts = [kafka.TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition → end offset, with kafka-python."""
    kafka = need("kafka", "pip install kafka-python")
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [kafka.TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


#: Kafka's record-batch codec ids (the low 3 bits of a batch's attributes).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def batch_codecs(bootstrap: str, topic: str, count: int) -> list[int]:
    """The codec id of every record batch the broker returns for topic, read
    with kafka-python: its consumer hands each fetched batch to
    MemoryRecords.next_batch, which this wraps to record the batch's
    attributes as they came over the wire (the broker's view, not ours)."""
    need("kafka", "pip install kafka-python")
    from kafka.record import memory_records

    seen: list[int] = []
    orig = memory_records.MemoryRecords.next_batch

    def recording(self, *a, **kw):
        batch = orig(self, *a, **kw)
        if batch is not None:
            seen.append(batch.attributes & 0x07)
        return batch

    memory_records.MemoryRecords.next_batch = recording
    try:
        consume(bootstrap, topic, count)
    finally:
        memory_records.MemoryRecords.next_batch = orig
    return seen
