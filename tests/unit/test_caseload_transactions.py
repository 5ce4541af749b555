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


async def test_a_commit_flushes_the_buffered_table_changes_first_between_two_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust commits a transaction without flushing its producer's buffer, where the tables'
    changelog records wait (send_soon): a table change went into the next transaction while
    its event's offset committed in this one, and kill -9 before the next commit lost it (a
    case left out of its worker's caseload). Fails on the old code: nothing was flushed."""
    happened: list[str] = []

    class Producer:
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
