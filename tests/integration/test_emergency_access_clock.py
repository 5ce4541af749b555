"""Break the glass against a clock the test moves, on SQLite and PostgreSQL: the window opens
and closes exactly, a read after it is refused and recorded, and the review queue shows an
access overdue once the agency's review limit has passed, until it is reviewed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casetrail_platform.commands import CommandContext
from casetrail_platform.decide import published_at_once
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl, AccessDenied
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsProjection, CaseFactsReader
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.projections.runner import catch_up
from casetrail_platform.store.port import EventStore
from events.catalog.access import AccessPurpose, RecordAccessDenied, RecordAccessed
from events.catalog.assignment import CaseAssigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened
from events.catalog.examples import example_events
from events.catalog_registry import default_registry
from events.envelope import Actor, EventMetadata, NewEvent
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.emergency_accesses import (
    EmergencyAccessesProjection,
    EmergencyAccessQueue,
)
from services.intake.app.commands import (
    ListEmergencyAccesses,
    OpenEmergencyAccess,
    ReviewEmergencyAccess,
)
from services.intake.app.emergency import (
    QueueItem,
    open_emergency_access,
    review_emergency_access,
    review_queue,
)
from services.intake.domain.cases import case_stream
from tests.support.backends import BACKENDS, store_and_read_models

T0 = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
REVIEW_WITHIN = timedelta(hours=72)
GRANTEE = Principal(
    "sw-luis", Role.SOCIAL_WORKER, "eastbay-dss", "test", "team-east", frozenset({"break_glass"})
)
SUPERVISOR = Principal("helen", Role.SUPERVISOR, "eastbay-dss", "test", "team-west")


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=BACKENDS)
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, ReadModelStore]]:
    async with store_and_read_models(
        request.param, tmp_path, default_registry(), "glass"
    ) as opened:
        yield opened


def example(kind: type[CaseEvent], **changes: object) -> CaseEvent:
    found = next(event for event in example_events() if type(event) is kind)
    return found.model_copy(update=changes)


async def appended(store: EventStore, stream: str, event: CaseEvent, role: Role) -> None:
    metadata = EventMetadata(
        source="casetrail/test",
        actor=Actor("someone", role),
        occurred_at=T0,
        correlation_id=uuid.uuid4(),
    )
    await store.append(stream, [NewEvent(event=event, metadata=metadata)], 0)


def context(principal: Principal) -> CommandContext:
    return CommandContext(actor=principal.actor, idempotency_key=uuid.uuid4().hex)


async def test_the_window_the_refusal_after_it_and_the_overdue_review(
    storage: tuple[EventStore, ReadModelStore],
) -> None:
    store, read_models = storage
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await appended(
        store, case_stream(case_id), example(CaseOpened, case_id=case_id), Role.INTAKE_WORKER
    )
    assigned = example(CaseAssigned, case_id=case_id, worker_team="team-west")
    await appended(store, f"assignment-{case_id}", assigned, Role.COORDINATOR)
    clock = Clock()
    access = AccessControl(
        store,
        CaseFactsReader(read_models),
        "casetrail/intake",
        home_agency=DEFAULT_HOME_AGENCY,
        clock=clock,
    )
    queue = EmergencyAccessQueue(read_models)

    async def project() -> None:
        await catch_up(store, read_models, CaseFactsProjection())
        await catch_up(store, read_models, EmergencyAccessesProjection())

    opened = await open_emergency_access(
        store,
        ClosureLog(read_models),
        access,
        context(GRANTEE),
        GRANTEE,
        OpenEmergencyAccess(
            case_id, "Client unreachable, fall alarm raised", timedelta(minutes=30)
        ),
        clock.now,
        published_at_once,
    )
    assert opened.access.expires_at == T0 + timedelta(minutes=30)
    await project()

    async def read() -> None:
        facts = await access.case_facts(case_id)
        await access.authorize(GRANTEE, Action.READ_CASE, AccessPurpose.EMERGENCY, facts)

    clock.now = T0 + timedelta(minutes=29, seconds=59)
    await read()
    clock.now = T0 + timedelta(minutes=30)
    with pytest.raises(AccessDenied) as refused:
        await read()
    assert refused.value.reason == "EMERGENCY_ACCESS_EXPIRED"
    denied = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessDenied)]
    assert [(d.accessor_id, d.rule) for d in denied] == [
        (GRANTEE.subject, "emergency-access-expired")
    ]
    assert not [r for r in await store.read_all(0) if isinstance(r.event, RecordAccessed)]

    everything = ListEmergencyAccesses()
    items, truncated = await review_queue(
        queue,
        access,
        SUPERVISOR,
        AccessPurpose.SUPERVISION,
        everything,
        T0 + REVIEW_WITHIN - timedelta(seconds=1),
        REVIEW_WITHIN,
    )
    assert [(i.entry.emergency_access_id, i.overdue) for i in items] == [
        (opened.access.emergency_access_id, False)
    ]
    assert items[0].review_due_at == T0 + REVIEW_WITHIN
    assert not truncated
    items, _ = await review_queue(
        queue,
        access,
        SUPERVISOR,
        AccessPurpose.SUPERVISION,
        everything,
        T0 + REVIEW_WITHIN,
        REVIEW_WITHIN,
    )
    assert [i.overdue for i in items] == [True]

    await review_emergency_access(
        store,
        ClosureLog(read_models),
        access,
        context(SUPERVISOR),
        SUPERVISOR,
        ReviewEmergencyAccess(
            case_id, opened.access.emergency_access_id, "not_justified", "No alarm on record"
        ),
    )
    await project()
    items, _ = await review_queue(
        queue,
        access,
        SUPERVISOR,
        AccessPurpose.SUPERVISION,
        everything,
        T0 + 2 * REVIEW_WITHIN,
        REVIEW_WITHIN,
    )
    assert items == []
    items, _ = await review_queue(
        queue,
        access,
        SUPERVISOR,
        AccessPurpose.SUPERVISION,
        ListEmergencyAccesses(include_reviewed=True),
        T0 + 2 * REVIEW_WITHIN,
        REVIEW_WITHIN,
    )
    [reviewed] = items
    assert reviewed.overdue is False
    assert reviewed.entry.review is not None
    assert (reviewed.entry.review.reviewer_id, reviewed.entry.review.outcome) == (
        "helen",
        "not_justified",
    )


async def test_reviewed_history_never_pushes_an_access_awaiting_review_out_of_the_queue(
    storage: tuple[EventStore, ReadModelStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue reads at most ``QUEUE_SCAN_LIMIT`` documents: those awaiting review come
    first, and a scan cut short is answered truncated (before: the documents were read in id
    order, so with ``include_reviewed`` reviewed ones could fill the scan, leaving out an
    access awaiting review, and the answer said nothing was left out)."""
    store, read_models = storage
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await appended(
        store, case_stream(case_id), example(CaseOpened, case_id=case_id), Role.INTAKE_WORKER
    )
    assigned = example(CaseAssigned, case_id=case_id, worker_team="team-west")
    await appended(store, f"assignment-{case_id}", assigned, Role.COORDINATOR)
    await catch_up(store, read_models, CaseFactsProjection())
    clock = Clock()
    access = AccessControl(
        store,
        CaseFactsReader(read_models),
        "casetrail/intake",
        home_agency=DEFAULT_HOME_AGENCY,
        clock=clock,
    )
    opened = [
        await open_emergency_access(
            store,
            ClosureLog(read_models),
            access,
            context(GRANTEE),
            GRANTEE,
            OpenEmergencyAccess(case_id, f"Fall alarm number {n}", timedelta(minutes=30)),
            clock.now,
            published_at_once,
        )
        for n in range(4)
    ]
    awaiting = opened[0].access.emergency_access_id
    for other in opened[1:]:
        review = ReviewEmergencyAccess(
            case_id, other.access.emergency_access_id, "justified", "Alarm on record"
        )
        await review_emergency_access(
            store, ClosureLog(read_models), access, context(SUPERVISOR), SUPERVISOR, review
        )
    await catch_up(store, read_models, CaseFactsProjection())
    await catch_up(store, read_models, EmergencyAccessesProjection())
    monkeypatch.setattr("services.intake.adapters.emergency_accesses.QUEUE_SCAN_LIMIT", 2)

    async def listed(query: ListEmergencyAccesses) -> tuple[list[str], bool]:
        items, truncated = await review_queue(
            EmergencyAccessQueue(read_models),
            access,
            SUPERVISOR,
            AccessPurpose.SUPERVISION,
            query,
            T0 + REVIEW_WITHIN,
            REVIEW_WITHIN,
        )
        return [item.entry.emergency_access_id for item in items], truncated

    shown, truncated = await listed(ListEmergencyAccesses(include_reviewed=True))
    assert (shown[0], len(shown), truncated) == (awaiting, 2, True)
    assert await listed(ListEmergencyAccesses()) == ([awaiting], False)


async def test_an_access_withheld_from_the_queue_of_the_case_asked_for_is_on_the_record(
    storage: tuple[EventStore, ReadModelStore],
) -> None:
    """Another team's supervisor asking for a case's accesses is answered none, as if there
    were none, and the refusal is recorded before the answer (before: nothing recorded, so a
    supervisor looking into other teams' break-glass left no trace); a whole-queue listing
    filters other teams' cases without recording them (nobody asked for them)."""
    store, read_models = storage
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await appended(
        store, case_stream(case_id), example(CaseOpened, case_id=case_id), Role.INTAKE_WORKER
    )
    assigned = example(CaseAssigned, case_id=case_id, worker_team="team-west")
    await appended(store, f"assignment-{case_id}", assigned, Role.COORDINATOR)
    await catch_up(store, read_models, CaseFactsProjection())
    clock = Clock()
    access = AccessControl(
        store,
        CaseFactsReader(read_models),
        "casetrail/intake",
        home_agency=DEFAULT_HOME_AGENCY,
        clock=clock,
    )
    await open_emergency_access(
        store,
        ClosureLog(read_models),
        access,
        context(GRANTEE),
        GRANTEE,
        OpenEmergencyAccess(case_id, "Client unreachable", timedelta(minutes=30)),
        clock.now,
        published_at_once,
    )
    await catch_up(store, read_models, EmergencyAccessesProjection())
    east = Principal("ines", Role.SUPERVISOR, "eastbay-dss", "test", "team-east")

    async def listed(query: ListEmergencyAccesses) -> list[QueueItem]:
        items, _ = await review_queue(
            EmergencyAccessQueue(read_models),
            access,
            east,
            AccessPurpose.SUPERVISION,
            query,
            clock.now,
            REVIEW_WITHIN,
        )
        return items

    def denied() -> list[tuple[str, str, str]]:
        return [
            (r.event.accessor_id, r.event.case_id, r.event.rule)
            for r in recorded_events
            if isinstance(r.event, RecordAccessDenied)
        ]

    assert await listed(ListEmergencyAccesses()) == []
    recorded_events = await store.read_all(0)
    assert denied() == []
    assert await listed(ListEmergencyAccesses(case_id=case_id)) == []
    recorded_events = await store.read_all(0)
    assert [(who, case) for who, case, _ in denied()] == [("ines", case_id)]
