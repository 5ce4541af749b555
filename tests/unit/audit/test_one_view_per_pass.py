"""A pass over a case's pages reads one state of audit's timelines, whatever the bus delivers
meanwhile. Events of one stream can be dated before events already in it (a late write-up), so
between two pages the bus can deliver sequence N+1 dated behind the cursor and N+2 dated ahead
of it: pages read apart held N+2 without N+1. The export then signed a hole in a one-key stream
(`casetrail verify` failed the genuine export), and a state as of a moment folded a reopening
without the closure before it, a state the case never was in. On both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.ledger.note import origin_of
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler
from events.catalog.access import AccessPurpose, RecordAccessed, RecordSection
from events.catalog.assignment import CaseReassigned
from events.catalog.base import Role
from events.catalog.cases import CaseReopened
from events.catalog.monitoring import ContactKind, ContactLogged
from events.envelope import Actor
from services.audit.adapters.timeline import ReadModelTimelines, TimelineProjection
from services.audit.app import as_seen, queries
from services.audit.app.queries import AuditDeps
from services.audit.domain.history import TimeBasis
from services.audit.entrypoints import reviews
from tests.support.backends import read_models_on
from tests.support.exported import verified_export
from tests.unit.audit.support import (
    AUDITOR,
    CASE,
    COORDINATOR,
    DAY,
    T0,
    TEAM,
    Producer,
    assessed,
    assigned,
    closed,
    coordination,
    opened,
)

WORKER = "worker-ana"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def read_models(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ReadModelStore]:
    """Audit's read models on each backend (``deps`` reads its timelines from them)."""
    async with read_models_on(request.param, tmp_path, "one_view") as store:
        yield store


def delivering_before_second_page(
    monkeypatch: pytest.MonkeyPatch, deliver: Callable[[], Awaitable[None]]
) -> None:
    """The bus delivers (``deliver``) as the next pass asks for its second page, whichever
    timelines it reads (the store's or a snapshot's)."""
    page = ReadModelTimelines.page
    calls = 0

    async def paging(self: ReadModelTimelines, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            await deliver()
        return await page(self, *args, **kwargs)

    monkeypatch.setattr(ReadModelTimelines, "page", paging)
    monkeypatch.setattr(queries, "EXPORT_PAGE", 2)


def contact(contact_id: str) -> ContactLogged:
    return ContactLogged(
        case_id=CASE, contact_id=contact_id, kind=ContactKind.HOME_VISIT, summary="seen at home"
    )


async def test_an_export_taken_while_a_late_write_up_arrives_is_whole_and_verifies(
    deps: AuditDeps, read_models: ReadModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = Producer("casetrail/planning", f"case-{CASE}")
    log = [desk.record(contact(f"c{day}"), occurred_at=T0 + day * DAY) for day in range(1, 5)]
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in log:
        await handler(recorded)
    # A home visit of day 1 written up on day 6 (sequence 5), then a call on day 7 (6).
    arriving = [
        desk.record(
            contact("c5"), occurred_at=T0 + DAY + timedelta(hours=3), recorded_at=T0 + 6 * DAY
        ),
        desk.record(contact("c6"), occurred_at=T0 + 7 * DAY),
    ]
    log += arriving

    async def deliver() -> None:
        for recorded in arriving:
            await handler(recorded)

    delivering_before_second_page(monkeypatch, deliver)
    export = await queries.export_case(deps, AUDITOR, CASE, TimeBasis.OCCURRED)
    exported = [recorded async for page in export.pages for recorded in page]

    # The case as it stood when the export began: what arrived since is left out whole.
    assert [recorded.sequence for recorded in exported] == [1, 2, 3, 4]
    assert export.extent.streams == {("planning", f"case-{CASE}"): (4, 4)}
    result = await verified_export(tmp_path, origin_of("agency", "planning"), log, exported)
    assert (result.ok, result.problems) == (True, [])


async def test_a_state_as_of_a_moment_read_while_a_late_closure_arrives_is_one_that_was(
    deps: AuditDeps, read_models: ReadModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = Producer("casetrail/intake", f"case-{CASE}")
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in [
        desk.record(opened(), occurred_at=T0),
        desk.record(assessed(), occurred_at=T0 + timedelta(hours=2)),
        desk.record(assigned(), occurred_at=T0 + DAY),
    ]:
        await handler(recorded)
    # The closure written up late (sequence 4, dated an hour after the opening), then the
    # reopening (5).
    arriving = [
        desk.record(closed(), occurred_at=T0 + timedelta(hours=1), recorded_at=T0 + 6 * DAY),
        desk.record(CaseReopened(case_id=CASE, reason="moved back"), occurred_at=T0 + 7 * DAY),
    ]
    as_of = T0 + 8 * DAY
    before = await queries.get_state_as_of(deps, AUDITOR, CASE, as_of, TimeBasis.OCCURRED)

    async def deliver() -> None:
        for recorded in arriving:
            await handler(recorded)

    delivering_before_second_page(monkeypatch, deliver)
    racing = await queries.get_state_as_of(deps, AUDITOR, CASE, as_of, TimeBasis.OCCURRED)
    after = await queries.get_state_as_of(deps, AUDITOR, CASE, as_of, TimeBasis.OCCURRED)

    # The case as it stood when the read began: opened, assessed, assigned.
    assert (racing.events_applied, racing.status) == (before.events_applied, before.status)
    assert (before.events_applied, after.events_applied) == (3, 5)


async def test_a_case_as_a_user_saw_it_read_while_a_reassignment_arrives_is_one_that_was(
    deps: AuditDeps, read_models: ReadModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetCaseAsSeen reads the case three times (the facts U's entitlement is decided on, U's
    reads, the state shown): each of one commit, and the three of one commit too. Read from
    three snapshots, a reassignment recorded before T and delivered between them was missing
    from the facts and in the state: worker-ana was answered entitled as the case's worker
    beside a state naming another worker, a case the record never held."""
    desk, office = Producer("casetrail/intake", f"case-{CASE}"), coordination()
    access = coordination()
    access.stream = f"access-{CASE}"
    ana = Actor(WORKER, Role.SOCIAL_WORKER)
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in [
        desk.record(opened(), occurred_at=T0),
        office.record(assigned(), occurred_at=T0 + DAY, actor=COORDINATOR),
        access.record(worker_read(), occurred_at=T0 + 3 * DAY, actor=ana),
    ]:
        await handler(recorded)
    # Handed to worker-ben on day 2, delivered to audit late (another service's topic).
    reassignment = office.record(reassigned(), occurred_at=T0 + 2 * DAY, actor=COORDINATOR)
    as_of = T0 + 3 * DAY + timedelta(hours=1)
    claims = as_seen.UserClaims(WORKER)

    async def seen() -> as_seen.AsSeen:
        rendering = reviews.state_rendering(as_of)
        return await as_seen.case_as_seen(deps, AUDITOR, CASE, claims, as_of, rendering)

    before = await seen()

    async def deliver() -> None:
        await handler(reassignment)

    delivering_before_second_page(monkeypatch, deliver)
    racing = await seen()
    after = await seen()

    def told(answer: as_seen.AsSeen) -> tuple[str, str, int]:
        state = answer.state
        assert isinstance(state, audit_pb2.CaseState)
        return answer.entitlement.rule, state.assignment.worker_id, state.events_applied

    assert told(before) == ("assigned-worker", WORKER, 2)
    assert told(after) == ("no-relationship", "", 0)
    # The case as it stood when the review began.
    assert told(racing) == told(before)


def worker_read() -> RecordAccessed:
    return RecordAccessed(
        case_id=CASE,
        accessor_id=WORKER,
        accessor_role=Role.SOCIAL_WORKER,
        accessor_agency_id=DEFAULT_HOME_AGENCY,
        purpose=AccessPurpose.DIRECT_CARE,
        sections=(RecordSection.IDENTITY,),
        rule="assigned-worker",
        policy_version="2026.12-2",
    )


def reassigned() -> CaseReassigned:
    return CaseReassigned(
        case_id=CASE,
        previous_worker_id=WORKER,
        worker_id="worker-ben",
        worker_role=Role.SOCIAL_WORKER,
        worker_team=TEAM,
        reason="Ana moved to another team",
    )
