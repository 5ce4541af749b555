"""A bus-fed projection goes on past an erasure while an older snapshot keeps what it
overwrote (review of the bus, h-console): the erasure's batch waited 10 s for the snapshot
to end, then failed as a storage outage and was tried again every 2 s, with the store's writer
held 10 s each try, so no later event of any case reached the projection (and every other
read-model write waited) for as long as the snapshot stayed open, a backup's for hours. A
redelivered erasure that overwrote nothing did the same. Now the forgetting right after the
commit is one short try; the erasure's mark keeps it pending for later tries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

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
