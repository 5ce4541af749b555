"""An emergency access decided against a client erased in the meantime: the erasure (on the
client's stream) commits between the opening's read of it and the opening's append (on the
case's stream). The append is guarded on the client's stream as read, so the opening reads
again and is refused CLIENT_ERASED (the other commands' races: ``test_erasure_races``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from casetrail_platform.commands import RuleBroken
from casetrail_platform.decide import published_at_once
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.cases import CaseOpened
from events.catalog.emergency import EmergencyAccessOpened
from events.catalog.examples import example_events
from events.envelope import Actor, EventMetadata, NewEvent
from services.intake.adapters.case_closures import ClosureLog
from services.intake.app.commands import OpenEmergencyAccess
from services.intake.app.emergency import open_emergency_access
from services.intake.domain.cases import case_stream
from services.intake.domain.erasure import CLIENT_ERASED
from tests.unit.intake.support import GRANTEE, ErasedOnceRead, context_of

CASE = "case-glass-1"


def _metadata() -> EventMetadata:
    return EventMetadata(
        source="casetrail/intake",
        actor=Actor("dpo-1", Role.SUPERVISOR),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
    )


async def test_an_erasure_committed_between_the_read_and_the_append_refuses_the_access(
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = next(e for e in example_events() if isinstance(e, CaseOpened))
    opened = opened.model_copy(update={"case_id": CASE})
    await store.append(case_stream(CASE), [NewEvent(opened, _metadata())], 0)
    race = ErasedOnceRead(store, monkeypatch, opened.client_id)

    with pytest.raises(RuleBroken) as refused:
        await open_emergency_access(
            store,
            ClosureLog(read_models),
            access,
            context_of(GRANTEE),
            GRANTEE,
            OpenEmergencyAccess(CASE, "Client unreachable, fall alarm raised", timedelta(hours=1)),
            datetime.now(UTC),
            published_at_once,
        )
    assert race.erased
    assert refused.value.rule == CLIENT_ERASED
    stored = await store.read_stream(case_stream(CASE))
    assert not any(isinstance(r.event, EmergencyAccessOpened) for r in stored)
