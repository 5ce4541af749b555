"""Reviewing and closing an emergency access read the case's stream once: the grantee the
oversight decision needs is found in the history the command decides on."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from casetrail_platform.commands import NotCaughtUp
from casetrail_platform.decide import published_at_once
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl, AccessDenied
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import FACTS, CaseFactsProjection, CaseFactsReader
from casetrail_platform.projections.port import Document
from casetrail_platform.projections.runner import catch_up
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import AccessPurpose, RecordAccessDenied
from events.catalog.assignment import CaseAssigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened
from events.catalog.emergency import EmergencyAccessClosed, EmergencyAccessReviewed
from events.catalog.examples import example_events
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.emergency_accesses import (
    EmergencyAccessesProjection,
    EmergencyAccessQueue,
)
from services.intake.app.commands import (
    CloseEmergencyAccess,
    ListEmergencyAccesses,
    OpenEmergencyAccess,
    ReviewEmergencyAccess,
)
from services.intake.app.emergency import (
    REVIEW_QUEUE,
    QueueItem,
    close_emergency_access,
    open_emergency_access,
    review_emergency_access,
    review_queue,
)
from services.intake.domain.cases import case_stream
from tests.support.publication import HeldPublication
from tests.unit.intake.support import GRANTEE, context_of

GRANTEES_SUPERVISOR = Principal("helen", Role.SUPERVISOR, "eastbay-dss", "test", "team-east")
OTHER_SUPERVISOR = Principal("omar", Role.SUPERVISOR, "eastbay-dss", "test", "team-west")
AUDITOR = Principal("james", Role.AUDITOR, "eastbay-dss", "test")
CASE = "case-glass-1"


async def _opened_access(
    store: SqliteEventStore, read_models: SqliteReadModelStore, access: AccessControl
) -> str:
    """A case no team carries yet, broken into by ``GRANTEE``: only the grantee's supervisor
    oversees the access (grantee-supervisor), which needs the grantee from the stream."""
    opened = next(e for e in example_events() if isinstance(e, CaseOpened))
    metadata = EventMetadata(
        source="casetrail/intake",
        actor=Actor("intake-1", Role.INTAKE_WORKER),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
    )
    await store.append(
        case_stream(CASE), [NewEvent(opened.model_copy(update={"case_id": CASE}), metadata)], 0
    )
    await catch_up(store, read_models, CaseFactsProjection())
    glass = await open_emergency_access(
        store,
        ClosureLog(read_models),
        access,
        context_of(GRANTEE),
        GRANTEE,
        OpenEmergencyAccess(CASE, "Client unreachable, fall alarm raised", timedelta(minutes=30)),
        datetime.now(UTC),
        published_at_once,
    )
    return glass.access.emergency_access_id


def _counting_reads(store: SqliteEventStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The streams read from now on (SQLite's ``read_for_command`` reads through
    ``read_stream``)."""
    reads: list[str] = []
    read_stream = store.read_stream

    async def counted(stream: str, **kwargs: Any) -> list[RecordedEvent]:
        reads.append(stream)
        return await read_stream(stream, **kwargs)

    monkeypatch.setattr(store, "read_stream", counted)
    return reads


async def test_a_review_by_the_grantees_supervisor_reads_the_case_once(
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    access_id = await _opened_access(store, read_models, access)
    reads = _counting_reads(store, monkeypatch)

    recorded = await review_emergency_access(
        store,
        ClosureLog(read_models),
        access,
        context_of(GRANTEES_SUPERVISOR),
        GRANTEES_SUPERVISOR,
        ReviewEmergencyAccess(CASE, access_id, "justified", "Fall alarm on record"),
    )

    assert reads == [case_stream(CASE)]
    [review] = await store.read_stream(case_stream(CASE), from_version=recorded.version)
    assert isinstance(review.event, EmergencyAccessReviewed)


async def test_a_closing_by_the_grantee_reads_the_case_once(
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    access_id = await _opened_access(store, read_models, access)
    reads = _counting_reads(store, monkeypatch)

    closed = await close_emergency_access(
        store,
        ClosureLog(read_models),
        access,
        context_of(GRANTEE),
        GRANTEE,
        CloseEmergencyAccess(CASE, access_id),
        datetime.now(UTC),
        published_at_once,
    )

    assert isinstance(closed.closing, EmergencyAccessClosed)
    assert reads == [case_stream(CASE)]


async def test_whoever_does_not_oversee_the_access_is_refused_and_recorded_writing_nothing(
    store: SqliteEventStore, read_models: SqliteReadModelStore, access: AccessControl
) -> None:
    access_id = await _opened_access(store, read_models, access)
    version = await store.stream_version(case_stream(CASE))

    with pytest.raises(AccessDenied):
        await review_emergency_access(
            store,
            ClosureLog(read_models),
            access,
            context_of(OTHER_SUPERVISOR),
            OTHER_SUPERVISOR,
            ReviewEmergencyAccess(CASE, access_id, "justified", "Looks fine"),
        )
    with pytest.raises(AccessDenied):
        await close_emergency_access(
            store,
            ClosureLog(read_models),
            access,
            context_of(OTHER_SUPERVISOR),
            OTHER_SUPERVISOR,
            CloseEmergencyAccess(CASE, access_id),
            datetime.now(UTC),
            published_at_once,
        )

    assert await store.stream_version(case_stream(CASE)) == version
    denied = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessDenied)]
    assert [(d.accessor_id, d.case_id) for d in denied] == [("omar", CASE), ("omar", CASE)]


async def test_the_review_queue_reads_the_facts_of_its_cases_in_one_read(
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The queue scans up to 10,000 accesses: their cases' policy facts are one ``get_many``,
    not a read per case."""
    await _opened_access(store, read_models, access)
    await catch_up(store, read_models, EmergencyAccessesProjection())
    single: list[str] = []
    many: list[list[str]] = []
    get, get_many = read_models.get, read_models.get_many

    async def counted_get(collection: str, key: str) -> Document | None:
        single.append(collection)
        return await get(collection, key)

    async def counted_many(collection: str, keys: Sequence[str]) -> dict[str, Document]:
        many.append(list(keys))
        return await get_many(collection, keys)

    monkeypatch.setattr(read_models, "get", counted_get)
    monkeypatch.setattr(read_models, "get_many", counted_many)

    items, more = await _queue(read_models, access, GRANTEES_SUPERVISOR, AccessPurpose.SUPERVISION)

    assert [item.entry.case_id for item in items] == [CASE]
    assert not more
    assert FACTS not in single
    assert many == [[CASE]]


async def test_a_closing_is_answered_once_the_bus_has_it(
    store: SqliteEventStore, read_models: SqliteReadModelStore, access: AccessControl
) -> None:
    """The grantee's reads in every service wait for their facts to hold what the bus has: from
    the answer on, they are decided with the closing (``IntakeDeps.published``)."""
    access_id = await _opened_access(store, read_models, access)
    publication = HeldPublication()
    closing, now = context_of(GRANTEE), datetime.now(UTC)
    closed = await publication.answered_once_acknowledged(
        store,
        case_stream(CASE),
        lambda: close_emergency_access(
            store,
            ClosureLog(read_models),
            access,
            closing,
            GRANTEE,
            CloseEmergencyAccess(CASE, access_id),
            now,
            publication.published,
        ),
    )
    assert closed.closing.emergency_access_id == access_id


async def test_a_supervisor_s_queue_is_decided_on_the_facts_the_bus_has(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    """A supervisor sees an access in the queue by the case's team (or, on a case no team
    carries, the grantee's): a transfer ends that. The cases the facts as they stand show are
    waited for (``case_facts_caught_up``) and decided again afresh; an auditor's right is the
    agency's, and asks nothing."""
    asked: list[str] = []

    async def caught_up(case_id: str) -> bool:
        # The facts' group catches up meanwhile: coordination assigned the case to team-west.
        asked.append(case_id)
        await _record(store, "casetrail/coordination", _assigned_west())
        await catch_up(store, read_models, CaseFactsProjection())
        return True

    access = AccessControl(
        store,
        CaseFactsReader(read_models),
        "casetrail/intake",
        home_agency=DEFAULT_HOME_AGENCY,
        case_facts_caught_up=caught_up,
    )
    await _opened_access(store, read_models, access)
    await catch_up(store, read_models, EmergencyAccessesProjection())

    assert await _queue(read_models, access, GRANTEES_SUPERVISOR, AccessPurpose.SUPERVISION) == (
        [],
        False,
    )
    assert asked == [CASE]  # answered OK, the access listed, before the queue waited
    [item], _ = await _queue(read_models, access, AUDITOR, AccessPurpose.CONFIDENTIALITY_REVIEW)
    assert item.entry.case_id == CASE
    assert asked == [CASE]


async def test_a_supervisor_s_queue_not_caught_up_in_time_discloses_nothing(
    store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    async def behind(case_id: str) -> bool:
        return False

    access = AccessControl(
        store,
        CaseFactsReader(read_models),
        "casetrail/intake",
        home_agency=DEFAULT_HOME_AGENCY,
        case_facts_caught_up=behind,
    )
    await _opened_access(store, read_models, access)
    await catch_up(store, read_models, EmergencyAccessesProjection())
    with pytest.raises(NotCaughtUp) as raised:
        await _queue(read_models, access, GRANTEES_SUPERVISOR, AccessPurpose.SUPERVISION)
    # The queue scanned the case, the request named none: the refusal names the queue.
    assert raised.value.subject == REVIEW_QUEUE


def _queue(
    read_models: SqliteReadModelStore,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
) -> Awaitable[tuple[list[QueueItem], bool]]:
    """``principal``'s whole queue of accesses awaiting review, 72 hours to review each."""
    return review_queue(
        EmergencyAccessQueue(read_models),
        access,
        principal,
        purpose,
        ListEmergencyAccesses(),
        datetime.now(UTC),
        timedelta(hours=72),
    )


def _assigned_west() -> CaseAssigned:
    return CaseAssigned(
        case_id=CASE,
        worker_id="sw-west",
        worker_role=Role.SOCIAL_WORKER,
        worker_team="team-west",
        reason="fits",
    )


async def _record(store: SqliteEventStore, source: str, event: CaseEvent) -> None:
    metadata = EventMetadata(
        source=source,
        actor=Actor("coordinator-1", Role.COORDINATOR),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
    )
    stream = case_stream(CASE)
    await store.append(stream, [NewEvent(event, metadata)], await store.stream_version(stream))


async def test_another_agencys_reviewer_is_refused_the_queue_on_the_record(
    store: SqliteEventStore, read_models: SqliteReadModelStore, access: AccessControl
) -> None:
    """The queue is the agency's: another agency's supervisor (the grantee's supervisor's
    ``sub`` and team) or auditor is refused ``NO_RELATIONSHIP`` before it is read, recorded
    under the queue, or the case asked for. Before, the queue was scanned, each case left out
    and the empty answer (its ``truncated`` telling of a queue longer than a scan) unrecorded."""
    await _opened_access(store, read_models, access)
    await catch_up(store, read_models, EmergencyAccessesProjection())
    elsewhere = "westside-dss"
    namesakes = [
        (replace(GRANTEES_SUPERVISOR, agency=elsewhere), AccessPurpose.SUPERVISION, None),
        (replace(AUDITOR, agency=elsewhere), AccessPurpose.CONFIDENTIALITY_REVIEW, CASE),
    ]
    before = await store.last_position()
    for principal, purpose, case_id in namesakes:
        with pytest.raises(AccessDenied) as refused:
            await review_queue(
                EmergencyAccessQueue(read_models),
                access,
                principal,
                purpose,
                ListEmergencyAccesses(case_id=case_id),
                datetime.now(UTC),
                timedelta(hours=72),
            )
        assert refused.value.reason == "NO_RELATIONSHIP"
    denied = [
        r.event for r in await store.read_all(before) if isinstance(r.event, RecordAccessDenied)
    ]
    assert [(d.accessor_id, d.accessor_agency_id, d.case_id, d.rule) for d in denied] == [
        ("helen", elsewhere, REVIEW_QUEUE, "no-relationship"),
        ("james", elsewhere, CASE, "no-relationship"),
    ]
    # The agency's own see the queue as before.
    items, _ = await _queue(read_models, access, GRANTEES_SUPERVISOR, AccessPurpose.SUPERVISION)
    assert [item.entry.case_id for item in items] == [CASE]
