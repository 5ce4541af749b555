"""The caseload processor's producer: its flush, which precedes every commit, returns once each
record buffered before it was delivered, and raises when one was not."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Producer as KafkaProducer
from faust.types import TP, FutureMessage, RecordMetadata

from services.caseload.producer import DeliveringProducer, RecordsNotDelivered

DELIVERED = RecordMetadata(topic="t", partition=0, topic_partition=TP("t", 0), offset=1)


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> DeliveringProducer:
    """A producer whose buffer and Faust flush do nothing: the test resolves the records."""

    async def faust_flush(self: Any) -> None:
        # Faust's flush returned while its sender still held a record (the bug this guards).
        return None

    monkeypatch.setattr(KafkaProducer, "send_soon", lambda self, fut: None)
    monkeypatch.setattr(KafkaProducer, "flush", faust_flush)
    return DeliveringProducer.__new__(DeliveringProducer)


def record() -> FutureMessage:
    return FutureMessage(SimpleNamespace())  # type: ignore[arg-type]


async def test_a_flush_waits_until_the_records_buffered_before_it_are_delivered(
    producer: DeliveringProducer,
) -> None:
    """Fails on Faust's producer: its flush returned with the record still on its way, the
    offsets committed past it, and kill -9 then lost it (a contact missing from a day)."""
    held = record()
    producer.send_soon(held)
    flushing = asyncio.create_task(producer.flush())
    await asyncio.sleep(0.01)
    assert not flushing.done(), "flushed while a buffered record was still on its way"
    held.set_result(DELIVERED)
    await asyncio.wait_for(flushing, timeout=5)
    await asyncio.sleep(0)
    assert producer.undelivered == set()


async def test_records_buffered_after_a_flush_began_do_not_hold_it(
    producer: DeliveringProducer,
) -> None:
    """A busy stream keeps buffering: a flush waits for its own records only, so a commit is
    never held off for as long as events keep coming."""
    first = record()
    producer.send_soon(first)
    flushing = asyncio.create_task(producer.flush())
    await asyncio.sleep(0.01)
    later = record()
    producer.send_soon(later)
    first.set_result(DELIVERED)
    await asyncio.wait_for(flushing, timeout=5)
    await asyncio.sleep(0)
    assert producer.undelivered == {later}


async def test_a_record_that_failed_to_send_fails_the_flush(
    producer: DeliveringProducer,
) -> None:
    """Faust logged a failed send and committed the offsets past it; the commit now fails (the
    processor stops, and its successor reads the event again)."""
    failed = record()
    producer.send_soon(failed)
    failed.set_exception(ConnectionError("broker gone"))
    with pytest.raises(RecordsNotDelivered, match="1 buffered records were not sent"):
        await producer.flush()


async def test_a_flush_with_nothing_buffered_returns_at_once(
    producer: DeliveringProducer,
) -> None:
    await asyncio.wait_for(producer.flush(), timeout=1)
