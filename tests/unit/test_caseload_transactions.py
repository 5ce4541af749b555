"""The caseload processor's commits under ``exactly_once``: every record buffered so far goes
into the transactions before they commit, and never while a case event is half processed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import TransactionManager
from faust.types import TP

from services.caseload.transactions import SourcePartitionTransactions


class _RecordingProducer:
    """The transport's producer as the transaction manager uses it: sends taken into the
    named transaction, and the commits of transactions without offsets."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None, str | None]] = []
        self.committed: list[tuple[str, bool]] = []

    async def flush(self) -> None:
        pass

    async def send(self, topic: str, *args: Any, transactional_id: str | None) -> Any:
        self.sent.append((topic, args[2], transactional_id))
        return asyncio.get_running_loop().create_future()

    async def commit_records(self, transactional_id: str, *, start_new_transaction: bool) -> None:
        self.committed.append((transactional_id, start_new_transaction))


def _manager(producer: _RecordingProducer) -> SourcePartitionTransactions:
    manager = SourcePartitionTransactions.__new__(SourcePartitionTransactions)
    manager.app = SimpleNamespace(  # type: ignore[assignment]
        producer=producer,
        processing=asyncio.Lock(),
        conf=SimpleNamespace(id="caseload"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
    )
    manager.producer = producer  # type: ignore[assignment]
    manager.consumer = SimpleNamespace(  # type: ignore[assignment]
        key_partition=lambda topic, key, partition: partition
    )
    return manager


async def test_a_commit_flushes_the_buffered_table_changes_first_between_two_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust commits a transaction without flushing its producer's buffer, where the tables'
    changelog records wait (send_soon): a table change went into the next transaction while
    its event's offset committed in this one, and kill -9 before the next commit lost it (a
    case left out of its worker's caseload). Fails on the old code: nothing was flushed."""
    happened: list[str] = []

    class Producer(_RecordingProducer):
        async def flush(self) -> None:
            happened.append("flush")

    async def committed(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        happened.append("commit")
        return True

    monkeypatch.setattr(TransactionManager, "commit", committed)
    manager = _manager(Producer())
    processing: asyncio.Lock = manager.app.processing  # type: ignore[attr-defined]
    offsets = {TP("casetrail.case-events", 0): 7}

    await processing.acquire()  # a case event half processed
    commit = asyncio.create_task(manager.commit(offsets))
    await asyncio.sleep(0.01)
    assert happened == [], "committed in the middle of an event"
    processing.release()
    assert await commit is True
    assert happened == ["flush", "commit"]


async def test_a_commit_also_commits_transactions_that_took_records_but_have_no_offsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust commits only the transactions of partitions with offsets to commit: a record
    routed to another partition's transaction (a changelog record sent from the buffer, with
    no event being processed) sat in an open transaction until the broker rolled it back 60 s
    later, the views behind it all that minute (seen in 1 of 5 restarts of the kill -9 test).
    Fails on the old code: only partition 0's transaction was committed."""
    with_offsets: list[set[int]] = []

    async def committed(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        with_offsets.append({tp.partition for tp in offsets})
        return True

    monkeypatch.setattr(TransactionManager, "commit", committed)
    producer = _RecordingProducer()
    manager = _manager(producer)

    await manager.send("cases-changelog", b"case-1", b"{}", 2, None, None)
    await manager.send("cases-changelog", b"case-2", b"{}", 0, None, None)
    assert [sent[2] for sent in producer.sent] == ["caseload-0-2", "caseload-0-0"]
    assert await manager.commit({TP("casetrail.case-events", 0): 7}) is True

    assert with_offsets == [{0}]
    assert producer.committed == [("caseload-0-2", True)]
    # Committed once: the next commit has nothing more to commit for it.
    await manager.commit({TP("casetrail.case-events", 0): 8}, start_new_transaction=False)
    assert producer.committed == [("caseload-0-2", True)]


async def test_records_sent_to_a_revoked_partition_are_left_to_its_new_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A revoked partition's producer stops; committing its transaction after that would
    begin a new one and fence the partition's new owner."""

    async def rebalanced(self: Any, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        pass

    async def committed(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        return True

    monkeypatch.setattr(TransactionManager, "on_rebalance", rebalanced)
    monkeypatch.setattr(TransactionManager, "commit", committed)
    producer = _RecordingProducer()
    manager = _manager(producer)
    await manager.send("cases-changelog", b"case-1", b"{}", 2, None, None)
    await manager.send("cases-changelog", b"case-3", b"{}", 3, None, None)

    await manager.on_rebalance(set(), {TP("casetrail.case-events", 2)}, set())
    await manager.commit({})

    assert producer.committed == [("caseload-0-3", True)]
