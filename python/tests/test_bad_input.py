"""Bad input: typed errors at the call, nothing buffered."""

from __future__ import annotations

import pytest

from kpush import InvalidConfigError, NotWrittenError
from kpush.aio import AIOKafkaProducer, Producer

BAD_CALLS = [
    ("topic int", dict(topic=1, value=b"v"), TypeError),
    ("topic bytes", dict(topic=b"bad", value=b"v"), TypeError),
    ("value int", dict(topic="bad", value=5), TypeError),
    ("value list", dict(topic="bad", value=[1]), TypeError),
    ("key dict", dict(topic="bad", value=b"v", key={}), TypeError),
    ("value lone surrogate", dict(topic="bad", value="\ud800"), ValueError),
    ("headers str", dict(topic="bad", value=b"v", headers="h"), TypeError),
    ("header not a pair", dict(topic="bad", value=b"v", headers=[("a", b"b", b"c")]), TypeError),
    ("header key bytes", dict(topic="bad", value=b"v", headers=[(b"k", b"v")]), TypeError),
    ("header value int", dict(topic="bad", value=b"v", headers=[("k", 1)]), TypeError),
    ("partition negative", dict(topic="bad", value=b"v", partition=-1), ValueError),
    ("partition str", dict(topic="bad", value=b"v", partition="0"), TypeError),
    ("partition bool", dict(topic="bad", value=b"v", partition=True), TypeError),
    ("timestamp negative", dict(topic="bad", value=b"v", timestamp_ms=-5), ValueError),
    ("timestamp float", dict(topic="bad", value=b"v", timestamp_ms=1.5), TypeError),
]


@pytest.mark.parametrize("name,kw,exc", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
async def test_bad_arguments_raise_at_the_call(broker, name, kw, exc):
    async with Producer(bootstrap_servers=broker.bootstrap) as p:
        with pytest.raises(exc):
            await p.send(**kw)
        with pytest.raises(exc):
            p.send_nowait(**kw)
        await p.flush(timeout=10)
        s = p.stats()
        assert s["records_sent"] == 0 and s["records_failed"] == 0 and s["records_buffered"] == 0


async def test_engine_rejections_are_typed(broker):
    async with Producer(bootstrap_servers=broker.bootstrap, max_batch_bytes=1024) as p:
        with pytest.raises(NotWrittenError) as e:
            await p.send("bad", b"x" * 4096)
        assert e.value.cause == "record_too_large"
        with pytest.raises(NotWrittenError) as e:
            await p.send("no-such-topic", b"x")
        assert e.value.cause == "unknown_topic" and e.value.topic == "no-such-topic"
        with pytest.raises(NotWrittenError) as e:
            await p.send("bad topic!", b"x")
        assert e.value.cause == "invalid_topic"
        with pytest.raises(NotWrittenError) as e:
            await p.send("bad", b"x", partition=7)
        assert e.value.cause == "invalid_partition"


@pytest.mark.parametrize("cls", [Producer, AIOKafkaProducer])
def test_unknown_keyword_is_named(cls):
    with pytest.raises(TypeError, match="'no_such_setting'"):
        cls(bootstrap_servers="127.0.0.1:1", no_such_setting=1)


def test_aiokafka_keywords_that_do_not_map_are_named():
    for kw in ({"transactional_id": "t"}, {"loop": None}, {"max_batch_size": 1000}, {"partitioner": lambda *a: 0}):
        with pytest.raises(TypeError, match=repr(next(iter(kw))) if "partitioner" not in kw else "partitioner"):
            AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **kw)


@pytest.mark.parametrize("kw", [
    {"acks": 2}, {"compression_type": "brotli"}, {"linger_ms": -1}, {"max_in_flight": 0},
    {"security_protocol": "TLS"}, {"partitioner": "random"}, {"ssl_cafile": "/x"},
])
def test_invalid_settings(kw):
    with pytest.raises(InvalidConfigError):
        Producer(bootstrap_servers="127.0.0.1:1", **kw)


async def test_invalid_setting_found_by_the_engine():
    with pytest.raises(InvalidConfigError) as e:
        await Producer(bootstrap_servers="127.0.0.1:1", max_in_flight=9).start()
    assert "Inflight" in e.value.message


async def test_closed_and_unstarted_producer(broker):
    p = Producer(bootstrap_servers=broker.bootstrap)
    with pytest.raises(NotWrittenError) as e:
        await p.send("bad", b"v")
    assert e.value.cause == "not_started"
    await p.start()
    await p.close()
    await p.close()  # twice is fine
    with pytest.raises(NotWrittenError) as e:
        await p.send("bad", b"v")
    assert e.value.cause == "closed"
    with pytest.raises(NotWrittenError):
        await p.flush()
