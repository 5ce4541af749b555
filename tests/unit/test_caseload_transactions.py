"""The caseload processor's commits under ``exactly_once``: every record buffered so far goes
into the transactions before they commit, and never while a case event is half processed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import TransactionManager
from faust.types import TP

from services.caseload.transactions import HandOvers, SourcePartitionTransactions


async def test_a_commit_flushes_the_buffered_table_changes_first_between_two_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust commits a transaction without flushing its producer's buffer, where the tables'
    changelog records wait (send_soon): a table change went into the next transaction while
    its event's offset committed in this one, and kill -9 before the next commit lost it (a
    case left out of its worker's caseload). Fails on the old code: nothing was flushed."""
    happened: list[str] = []

    class Producer:
        buffer = SimpleNamespace(size=0)

        async def flush(self) -> None:
            happened.append("flush")

    async def committed(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        happened.append("commit")
        return True

    monkeypatch.setattr(TransactionManager, "commit", committed)
    processing = asyncio.Lock()
    manager = SourcePartitionTransactions.__new__(SourcePartitionTransactions)
    manager.app = SimpleNamespace(producer=Producer(), processing=processing)  # type: ignore[assignment]
    offsets = {TP("casetrail.case-events", 0): 7}

    await processing.acquire()  # a case event half processed
    commit = asyncio.create_task(manager.commit(offsets))
    await asyncio.sleep(0.01)
    assert happened == [], "committed in the middle of an event"
    processing.release()
    assert await commit is True
    assert happened == ["flush", "commit"]


async def test_a_commit_waits_for_the_record_the_buffer_is_still_handing_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust's flush returned once the buffer's queue was empty, while its sender still held the
    last record it took (aiokafka keeps a send waiting while its partition's batch is full): that
    record went into the next transaction after its event's offset committed in this one, and
    kill -9 in between lost it (one contact missing from a worker's day). Fails on the old code:
    it committed at once."""
    happened: list[str] = []
    batch_drained = asyncio.Event()

    class Producer:
        buffer = SimpleNamespace(size=0)

        async def flush(self) -> None:
            happened.append("flush")

        async def send(self, *args: Any, **kwargs: Any) -> None:
            await batch_drained.wait()
            happened.append("handed over")

    async def committed(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        happened.append("commit")
        return True

    monkeypatch.setattr(TransactionManager, "commit", committed)
    manager = SourcePartitionTransactions.__new__(SourcePartitionTransactions)
    producer = Producer()
    manager.app = SimpleNamespace(  # type: ignore[assignment]
        producer=producer,
        processing=asyncio.Lock(),
        conf=SimpleNamespace(id="caseload"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
    )
    manager.producer = producer  # type: ignore[assignment]
    manager.consumer = SimpleNamespace(key_partition=lambda topic, key, partition: 0)  # type: ignore[assignment]
    # The buffer's sender took a changelog record (outside any event: Faust's routing) and
    # waits for room in the batch.
    sending = asyncio.create_task(
        manager.send("caseload-contacts-per-day-changelog", b"k", b"v", 0, None, None)
    )
    await asyncio.sleep(0.01)
    commit = asyncio.create_task(manager.commit({TP("caseload-worker-facts", 0): 3}))
    await asyncio.sleep(0.01)
    assert happened == [], "committed while a record was being handed over"
    batch_drained.set()
    await sending
    assert await commit is True
    assert happened == ["handed over", "flush", "commit"]


async def test_a_commit_waits_until_the_buffer_is_empty() -> None:
    """Records still queued in the buffer: the commit waits for each send to finish."""
    hand_overs = HandOvers()
    queued = [b"a", b"b"]

    async def sender() -> None:
        while queued:
            await asyncio.sleep(0.005)
            with hand_overs.one():
                queued.pop()
                await asyncio.sleep(0.005)

    sending = asyncio.create_task(sender())
    await asyncio.wait_for(hand_overs.settled(lambda: len(queued)), timeout=5)
    assert queued == []
    assert hand_overs.under_way == 0
    await sending
