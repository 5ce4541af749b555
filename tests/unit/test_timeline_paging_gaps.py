"""A timeline page is filled up to a byte budget as well as a count: a case whose events are
large is still read at the default page size, each answer under gRPC's 4 MiB message limit,
the pages cover every event once, and each access record names what its page showed only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.access import RecordAccessed, RecordSection
from events.catalog.planning import Goal, GoalAdded, GoalTerm
from events.catalog.values import NeedCategory
from events.catalog_registry import default_registry
from events.envelope import RecordedEvent
from services.audit.adapters.timeline import ReadModelTimelines, TimelineProjection
from services.audit.app.queries import AuditDeps
from services.audit.domain.history import IndexPage, within_bytes
from services.audit.entrypoints.grpc_server import AuditServicer
from services.audit.entrypoints.responses import TIMELINE_PAGE_BYTES
from tests.support.identity import TestIssuer, acting
from tests.unit.audit.serving import audit_server
from tests.unit.audit.support import CASE, T0, Producer, assigned, coordination, intake, opened

GRPC_MESSAGE_LIMIT = 4 * 1024 * 1024
LARGE_GOALS = 18


def _large_goal(number: int) -> GoalAdded:
    objectives = tuple(f"{number:02d}-{index:03d} " + "o" * 2_400 for index in range(100))
    return GoalAdded(
        case_id=CASE,
        plan_id="plan-1",
        goal=Goal(
            goal_id=f"goal-{number}",
            statement="Keep living at home",
            term=GoalTerm.LONG,
            need_category=NeedCategory.HOME_CARE,
            objectives=objectives,
        ),
    )


@pytest.fixture
async def received(read_models: SqliteReadModelStore) -> list[RecordedEvent]:
    """The case opened, 18 goals of about 250 KB each, then an assignment."""
    planning = Producer("casetrail/planning", f"case-{CASE}")
    events = [intake().record(opened(), occurred_at=T0)]
    events += [
        planning.record(_large_goal(number), occurred_at=T0 + timedelta(minutes=number))
        for number in range(1, LARGE_GOALS + 1)
    ]
    events.append(coordination().record(assigned(), occurred_at=T0 + timedelta(hours=1)))
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in events:
        await handler(recorded)
    return events


@pytest.fixture
async def audit(
    store: SqliteEventStore, read_models: SqliteReadModelStore, issuer: TestIssuer
) -> AsyncIterator[audit_pb2_grpc.AuditServiceAsyncStub]:
    deps = AuditDeps(
        timelines=ReadModelTimelines(read_models, default_registry()),
        store=store,
        access=AccessControl(store, None, "casetrail/audit", home_agency=DEFAULT_HOME_AGENCY),
    )
    async with audit_server(AuditServicer(deps), issuer) as stub:
        yield stub


def _auditor() -> common_pb2.QueryContext:
    return acting(
        Person("user-auditor", "auditor"),
        common_pb2.QueryContext(purpose="confidentiality_review"),
    )


async def test_a_case_of_large_events_is_read_at_the_default_page_size(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    received: list[RecordedEvent],
    store: SqliteEventStore,
) -> None:
    pages: list[audit_pb2.GetTimelineResponse] = []
    token = ""
    while True:
        page = await audit.GetTimeline(
            audit_pb2.GetTimelineRequest(
                context=_auditor(), case_id=CASE, page_token=token, exclude_access_events=True
            )
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            break

    assert len(pages) > 1
    assert all(page.ByteSize() < GRPC_MESSAGE_LIMIT for page in pages)
    assert all(page.total_events == len(received) for page in pages)
    shown = [entry.event_id for page in pages for entry in page.entries]
    assert shown == [str(recorded.event_id) for recorded in received]
    accesses = [r.event for r in await store.read_all(0)]
    assert len(accesses) == len(pages)
    for page, access in zip(pages, accesses, strict=True):
        assert isinstance(access, RecordAccessed)
        types = {entry.event_type for entry in page.entries}
        assert (RecordSection.ASSIGNMENT in access.sections) == ("casetrail.case.assigned" in types)
        assert (RecordSection.PLAN in access.sections) == ("casetrail.goal.added" in types)


async def test_a_previous_page_is_cut_on_the_side_away_from_the_cursor(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, received: list[RecordedEvent]
) -> None:
    first = await audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=_auditor(), case_id=CASE, exclude_access_events=True)
    )
    second = await audit.GetTimeline(
        audit_pb2.GetTimelineRequest(
            context=_auditor(),
            case_id=CASE,
            page_token=first.next_page_token,
            exclude_access_events=True,
        )
    )
    back = await audit.GetTimeline(
        audit_pb2.GetTimelineRequest(
            context=_auditor(),
            case_id=CASE,
            page_token=second.previous_page_token,
            exclude_access_events=True,
        )
    )

    assert back.ByteSize() < GRPC_MESSAGE_LIMIT
    assert [e.event_id for e in back.entries] == [e.event_id for e in first.entries]
    assert back.previous_page_token == ""


def test_a_page_keeps_one_entry_even_past_the_budget(received: list[RecordedEvent]) -> None:
    page = IndexPage(received[:3], ["a", "b", "c"], more=False)

    forward = within_bytes(page, lambda recorded: TIMELINE_PAGE_BYTES * 2, 100, backward=False)
    backward = within_bytes(page, lambda recorded: TIMELINE_PAGE_BYTES * 2, 100, backward=True)
    whole = within_bytes(page, lambda recorded: 1, 3, backward=False)

    assert (forward.suffixes, forward.more) == (["a"], True)
    assert (backward.suffixes, backward.more) == (["c"], True)
    assert whole is page
