"""A bus-fed projection goes on past an erasure while an older snapshot keeps what it
overwrote (review of the bus, h-console): the erasure's batch waited 10 s for the snapshot
to end, then failed as a storage outage and was tried again every 2 s, with the store's writer
held 10 s each try, so no later event of any case reached the projection (and every other
read-model write waited) for as long as the snapshot stayed open, a backup's for hours. A
redelivered erasure that overwrote nothing did the same. Now the forgetting right after the
commit is one short try; the erasure's mark keeps it pending for later tries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.projections import port
from casetrail_platform.projections.port import DocumentTransaction, Projection
from casetrail_platform.projections.runner import BusProjectionHandler
from events.catalog.base import CaseEvent, Role
from events.catalog.erasure import ClientErased
from events.envelope import Actor, EventMetadata, RecordedEvent
from tests.support.backends import BACKENDS, older_snapshot, read_models_on
from tests.support.sample_events import NoteWritten

ERASED = "erased-cases"


class ErasedCases(Projection):
    """Notes counted per case; an erasure overwrites its cases' documents."""

    name = "erased-cases"
    collections = (ERASED,)
    event_types = frozenset({NoteWritten.event_type})

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        assert isinstance(recorded.event, NoteWritten)
        case_id = recorded.event.case_id
        document = await transaction.get(ERASED, case_id) or {"notes": 0}
        await transaction.put(ERASED, case_id, {"notes": document["notes"] + 1})

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        for case_id in erased.case_ids:
            await transaction.put(ERASED, case_id, {"notes": 0, "erased": True})


def _recorded(position: int, event: CaseEvent) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid4(),
        stream=f"stream-{position}",
        sequence=1,
        position=position,
        recorded_at=datetime.now(UTC),
        event=event,
        metadata=EventMetadata(
            source="casetrail/intake",
            actor=Actor("supervisor-1", Role.SUPERVISOR),
            occurred_at=datetime.now(UTC),
            correlation_id=uuid4(),
        ),
    )


def _note(position: int, case_id: str) -> RecordedEvent:
    return _recorded(position, NoteWritten(case_id=case_id, text="seen", words=1))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_erasure_beside_an_older_snapshot_holds_no_later_event_back(
    backend: str, tmp_path: Path
) -> None:
    async with read_models_on(backend, tmp_path, "erasure_snapshot") as read_models:
        handler = BusProjectionHandler(read_models, ErasedCases(), service="test")
        await handler.handle_batch([_note(1, "case-a")])
        erasure = _recorded(
            2, ClientErased(client_id="c", case_ids=("case-a",), request_reference="r-1")
        )
        async with older_snapshot(backend, tmp_path):
            async with read_models.transaction() as transaction:  # the database goes on
                await transaction.put("anything", "k", {"v": 1})
            await handler.handle_batch([erasure])
            await handler.handle_batch([_note(3, "case-b"), _note(4, "case-c")])
            await handler.handle_batch([erasure])  # redelivered
            assert await read_models.get(ERASED, "case-a") == {"notes": 0, "erased": True}
            assert await read_models.get(ERASED, "case-c") == {"notes": 1}
            assert await read_models.forgetting_pending()
        read_models._forget_retry_at = 0.0  # PENDING_FORGET_RETRY_SECONDS later
        await handler.handle_batch([_note(5, "case-b")])  # a later batch tries again
        assert not await read_models.forgetting_pending()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_bus_fed_projection_looks_at_the_stores_mark_a_minute_apart_whoever_left_it(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark is the store's (on PostgreSQL every replica's), but a batch tried it again
    only when its own replica's last try had failed: one left by another replica (whose try
    failed, or which ended between its erasure's commit and the forgetting) stayed until a
    start. It is looked at once a minute, and not with every batch in between."""
    async with read_models_on(backend, tmp_path, "forget_due") as read_models:
        looks: list[bool] = []
        tries: list[float | None] = []
        pending = read_models.forgetting_pending
        forget = read_models.forget_overwritten

        async def looking() -> bool:
            looks.append(await pending())
            return looks[-1]

        async def trying(patience: float | None = None) -> None:
            tries.append(patience)
            await forget(patience)

        monkeypatch.setattr(read_models, "forgetting_pending", looking)
        monkeypatch.setattr(read_models, "forget_overwritten", trying)
        handler = BusProjectionHandler(read_models, ErasedCases(), service="planning")
        await handler.handle_batch([_note(1, "case-a")])
        assert (looks, tries) == ([False], [])
        async with read_models.transaction() as transaction:  # another replica's erasure
            await transaction.put(ERASED, "case-a", {"notes": 0, "erased": True})
            await transaction.mark_overwritten()
        await handler.handle_batch([_note(2, "case-b")])
        assert (looks, tries) == ([False], [])  # within the minute: nothing asked
        read_models._forget_retry_at = 0.0  # PENDING_FORGET_RETRY_SECONDS later
        await handler.handle_batch([_note(3, "case-c")])
        assert (looks, tries) == ([False, True], [0.0])  # one try, waiting for nothing


async def test_a_forgetting_left_by_a_replica_that_failed_it_and_left_is_done_by_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, two replicas of planning (whose projections are all fed from the bus):
    the one that applied an erasure beside an older snapshot (a backup's) failed its
    forgetting, then left (scaled down, rescheduled); the one that stayed never tried it, and
    the values the erasure overwrote stayed in the table's files until a start."""
    from casetrail_platform.projections.postgres import PostgresReadModelStore
    from tests.support.servers import postgres_dsn, schema_of_its_own

    monkeypatch.setattr(port, "PENDING_FORGET_RETRY_SECONDS", 0.0)
    async with schema_of_its_own("replica_forget") as schema:
        leaving = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        staying = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        try:
            on_leaving = BusProjectionHandler(leaving, ErasedCases(), service="planning")
            on_staying = BusProjectionHandler(staying, ErasedCases(), service="planning")
            await on_staying.handle_batch([_note(1, "case-a")])
            erasure = _recorded(
                2, ClientErased(client_id="c", case_ids=("case-a",), request_reference="r-1")
            )
            async with older_snapshot("postgres", tmp_path):
                await on_leaving.handle_batch([erasure])
                assert await staying.forgetting_pending()
        finally:
            await leaving.close()
        try:
            deadline = time.monotonic() + 30
            position = 3
            while await staying.forgetting_pending():  # a try fails while any older is open
                assert time.monotonic() < deadline, "the replica that stayed never forgot"
                await on_staying.handle_batch([_note(position, "case-b")])
                position += 1
                await asyncio.sleep(0.1)
        finally:
            await staying.close()
