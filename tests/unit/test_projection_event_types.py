"""Bus-fed projections declare the event types they react to, and the bus gives them no
others: a declared set that missed a type would silently lose that type's effects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from casetrail_platform.projections.port import Document, Projection
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.base import CaseEvent, Role
from events.catalog.examples import example_events
from events.envelope import Actor, EventMetadata, RecordedEvent
from services.coordination.adapters.projections import CaseFactsProjection
from services.intake.adapters.case_closures import CaseClosuresProjection
from services.planning.adapters.case_views import CaseViewProjection

PROJECTIONS = [CaseClosuresProjection(), CaseFactsProjection(), CaseViewProjection()]


def _recorded(event: CaseEvent, number: int) -> RecordedEvent:
    return RecordedEvent(
        event_id=UUID(int=number),
        stream=f"stream-{number}",
        sequence=1,
        position=number,
        recorded_at=datetime(2024, 3, 5, 9, 0, tzinfo=UTC),
        event=event,
        metadata=EventMetadata(
            source="test",
            actor=Actor(user_id="worker-ana", role=Role.SOCIAL_WORKER),
            occurred_at=datetime(2024, 3, 4, 17, 30, tzinfo=UTC),
            correlation_id=UUID(int=7),
        ),
    )


@pytest.fixture
async def read_models(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    store = SqliteReadModelStore(tmp_path / "read-models.db")
    try:
        yield store
    finally:
        await store.close()


async def _snapshot(
    read_models: SqliteReadModelStore, projection: Projection
) -> dict[str, list[tuple[str, Document]]]:
    return {
        collection: [item async for item in read_models.scan(collection)]
        for collection in projection.collections
    }


@pytest.mark.parametrize("projection", PROJECTIONS, ids=lambda projection: projection.name)
async def test_declared_event_types_cover_what_apply_reacts_to(
    projection: Projection, read_models: SqliteReadModelStore
) -> None:
    wanted = projection.event_types
    assert wanted is not None
    examples = [_recorded(event, n) for n, event in enumerate(example_events(), start=1)]
    assert wanted <= {recorded.event_type for recorded in examples}, "unknown type declared"

    async with read_models.transaction() as transaction:
        for recorded in examples:
            if recorded.event_type in wanted:
                await projection.apply(transaction, recorded)
    applied = await _snapshot(read_models, projection)
    assert any(applied.values()), "the wanted examples changed nothing: the check is void"

    for recorded in examples:
        if recorded.event_type not in wanted:
            async with read_models.transaction() as transaction:
                await projection.apply(transaction, recorded)
            after = await _snapshot(read_models, projection)
            assert after == applied, f"{projection.name} reacts to {recorded.event_type}"
