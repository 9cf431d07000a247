"""Each error cause a record can fail with, produced for real and checked by
name (e.cause), class (NotWrittenError / OutcomeUnknownError) and, for a
broker's error, its Kafka error code (e.code)."""

from __future__ import annotations

import pytest

from conftest import end_offsets
from kpush import KafkaError, NotWrittenError, OutcomeUnknownError
from kpush.aio import Producer

from test_cancel_close import wait_for


async def test_buffer_full_fails_fast(own_broker):
    # One record may be buffered; with the broker frozen it stays in flight,
    # so the next one finds the buffer full and (fail fast) fails at once.
    async with Producer(bootstrap_servers=own_broker.bootstrap, max_buffered_records=1,
                        fail_fast_when_full=True) as p:
        await p.send("fault", b"warm-up")
        own_broker.pause()
        try:
            first = p.send_nowait("fault", b"held")
            await wait_for(lambda: p.stats()["records_buffered"] == 1, what="record buffered")
            with pytest.raises(NotWrittenError) as e:
                await p.send("fault", b"no room")
            assert e.value.cause == "buffer_full", e.value
            assert isinstance(e.value, KafkaError) and not isinstance(e.value, OutcomeUnknownError)
        finally:
            own_broker.resume()
        assert (await first).topic == "fault"  # the held record is written once the broker answers


async def test_delivery_timeout(own_broker):
    async with Producer(bootstrap_servers=own_broker.bootstrap, delivery_timeout_ms=1000,
                        request_timeout_ms=500) as p:
        await p.send("fault", b"warm-up")
        own_broker.pause()
        try:
            with pytest.raises(KafkaError) as e:
                await p.send("fault", b"never answered")
        finally:
            own_broker.resume()
        assert e.value.cause == "delivery_timeout", e.value
        # It was sent and not answered: it may have been written.
        assert isinstance(e.value, OutcomeUnknownError), type(e.value)


async def test_broker_error_has_its_name_and_code(broker):
    # The broker's max.message.bytes (1 MB, kpush dev's and Kafka's default)
    # is below the record: the broker refuses the batch with
    # MESSAGE_TOO_LARGE (error code 10); kpush's own limit is raised past it.
    before = end_offsets(broker.bootstrap, "errors")[0]
    async with Producer(bootstrap_servers=broker.bootstrap, max_batch_bytes=4 << 20) as p:
        with pytest.raises(NotWrittenError) as e:
            await p.send("errors", b"x" * (1 << 20))
        assert (e.value.cause, e.value.code) == ("MESSAGE_TOO_LARGE", 10), (e.value.cause, e.value.code, e.value)
        md = await p.send("errors", b"small")  # the producer carries on
    assert md.offset == before  # the refused record took no offset
