"""Planning's ``staff`` collection has two writers, the case view and the staff projection, each in
its own transaction (and consumer group); on PostgreSQL, with replicas, they run at once. Neither
may put a worker's earlier assignment back over a later one, whichever reads and writes first:
the worker would keep out-of-date credentials (a lapsed licence, refused counseling) until
their next assignment."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest

from casetrail_platform.projections.port import DocumentTransaction, Projection
from casetrail_platform.projections.postgres import PostgresReadModelStore
from events.catalog.assignment import CaseAssigned, CredentialKind, WorkerCredential
from events.catalog.base import Role
from events.envelope import Actor, EventMetadata, RecordedEvent
from services.planning.adapters.case_views import CaseViewProjection, CaseViews
from services.planning.adapters.staff import STAFF, StaffProjection
from services.planning.domain.model import StaffMember
from tests.support.replicas import read_model_replicas, waiting_for_a_lock

MOMENT = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
LAPSED = WorkerCredential(kind=CredentialKind.LICENCE, name="LMSW", valid_until=date(2030, 6, 1))
RENEWED = LAPSED.model_copy(update={"valid_until": date(2032, 6, 1)})


def _assigned(case_id: str, credential: WorkerCredential, position: int) -> RecordedEvent:
    at = MOMENT + timedelta(seconds=position)
    return RecordedEvent(
        event_id=uuid.uuid4(),
        stream=f"case-{case_id}",
        sequence=2,
        position=position,
        recorded_at=at,
        event=CaseAssigned(
            case_id=case_id,
            worker_id="worker-ana",
            worker_role=Role.SOCIAL_WORKER,
            reason="fits",
            credentials=(credential,),
        ),
        metadata=EventMetadata(
            "casetrail/coordination",
            Actor("coord-1", Role.COORDINATOR),
            at,
            correlation_id=uuid.uuid4(),
        ),
    )


EARLIER = _assigned("case-a", LAPSED, 5)
LATER = _assigned("case-b", RENEWED, 6)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[PostgresReadModelStore, PostgresReadModelStore]]:
    """Two replicas' read-model stores on one schema (a connection each)."""
    async with read_model_replicas("staff") as pair:
        yield pair


class _Held:
    """Holds a transaction before its first write to ``staff``: whatever it read before stays
    as it read it, uncommitted, until ``go``."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    def around(self, transaction: DocumentTransaction) -> DocumentTransaction:
        held = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                method = getattr(transaction, name)
                if not name.startswith("put"):
                    return method

                async def write(collection: str, *arguments: Any) -> Any:
                    if collection == STAFF and not held.go.is_set():
                        held.reached.set()
                        await held.go.wait()
                    return await method(collection, *arguments)

                return write

        return cast(DocumentTransaction, Proxy())


WRITERS = [
    pytest.param(CaseViewProjection(), StaffProjection(), id="case-view-applies-the-earlier"),
    pytest.param(StaffProjection(), CaseViewProjection(), id="staff-applies-the-earlier"),
]


@pytest.mark.parametrize(("earlier_writer", "later_writer"), WRITERS)
async def test_an_earlier_assignment_read_before_a_later_one_committed_is_not_written_over_it(
    replicas: tuple[PostgresReadModelStore, PostgresReadModelStore],
    earlier_writer: Projection,
    later_writer: Projection,
) -> None:
    one, two = replicas
    held = _Held()

    async def apply_earlier() -> None:
        async with one.transaction() as transaction:
            await earlier_writer.handle(held.around(transaction), EARLIER)

    earlier = asyncio.ensure_future(apply_earlier())
    # The earlier assignment's writer has read what it reads and is about to write ...
    await asyncio.wait_for(held.reached.wait(), 10)
    # ... when the later one's writer applies and commits it.
    async with two.transaction() as transaction:
        await later_writer.handle(transaction, LATER)
    held.go.set()
    await earlier

    assert await CaseViews(one).staff(["worker-ana"]) == {"worker-ana": RENEWED_ANA}


@pytest.mark.parametrize(("earlier_writer", "later_writer"), WRITERS)
async def test_an_earlier_assignment_waiting_for_a_later_ones_row_lock_is_not_written_over_it(
    replicas: tuple[PostgresReadModelStore, PostgresReadModelStore],
    earlier_writer: Projection,
    later_writer: Projection,
) -> None:
    one, two = replicas
    wrote, go = asyncio.Event(), asyncio.Event()

    async def apply_later() -> None:
        async with two.transaction() as transaction:
            await later_writer.handle(transaction, LATER)
            wrote.set()
            await go.wait()  # written, not committed: the row stays locked

    async def apply_earlier() -> None:
        async with one.transaction() as transaction:
            await earlier_writer.handle(transaction, EARLIER)

    later = asyncio.ensure_future(apply_later())
    await asyncio.wait_for(wrote.wait(), 10)
    earlier = asyncio.ensure_future(apply_earlier())
    await waiting_for_a_lock("INSERT INTO documents")
    go.set()
    await later
    await earlier

    assert await CaseViews(one).staff(["worker-ana"]) == {"worker-ana": RENEWED_ANA}


RENEWED_ANA = StaffMember("worker-ana", Role.SOCIAL_WORKER, (RENEWED,))
