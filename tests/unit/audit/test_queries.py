"""Audit queries against real SQLite stores: what they answer and what they record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, cast

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.commands import InvalidCommand, NotAllowed
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessDenied
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.projections.runner import BusProjectionHandler, catch_up
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.queries import QueryContext
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import (
    AccessPurpose,
    RecordAccessDenied,
    RecordAccessed,
    RecordSection,
)
from events.catalog.base import CaseEvent, Role
from events.catalog.erasure import ClientErased
from events.catalog.monitoring import ContactKind, ContactLogged
from events.cloudevents import from_json_lines, iter_json_lines
from events.envelope import Actor, RecordedEvent
from events.registry import EventRegistry
from services.audit.adapters.timeline import ClientTrailProjection, TimelineProjection
from services.audit.app import as_seen, queries
from services.audit.app.handlers import SERVICE_SOURCE
from services.audit.app.queries import AuditDeps
from services.audit.domain import history
from services.audit.domain.access import sections_disclosed, sensitive_fields_shown
from services.audit.domain.case_state import CaseStatus, ClientRecord, client_fold, fold
from services.audit.domain.errors import CaseNotFound
from services.audit.domain.history import IndexPage, TimeBasis, TimelineQuery
from services.audit.entrypoints.reviews import state_rendering
from tests.unit.audit.support import (
    AUDITOR,
    CASE,
    CASE_MANAGER,
    CLIENT,
    DAY,
    SUPERVISING,
    SUPERVISOR,
    T0,
    Producer,
    client_history,
    coordination,
    late_recorded_case,
)


@pytest.fixture
async def received(read_models: SqliteReadModelStore) -> list[RecordedEvent]:
    events = late_recorded_case()
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in events:
        await handler(recorded)
    return events


async def accesses(store: SqliteEventStore) -> list[RecordAccessed]:
    return [e for e in await access_events(store) if isinstance(e, RecordAccessed)]


async def access_events(store: SqliteEventStore) -> list[CaseEvent]:
    """Every access (and refusal) audit recorded, oldest first."""
    return [r.event for r in await store.read_all(0)]


@pytest.mark.usefixtures("received")
async def test_state_as_it_was_differs_from_state_as_it_was_known(deps: AuditDeps) -> None:
    as_of = T0 + 2 * DAY
    was = await queries.get_state_as_of(deps, AUDITOR, CASE, as_of, TimeBasis.OCCURRED)
    known = await queries.get_state_as_of(deps, AUDITOR, CASE, as_of, TimeBasis.RECORDED)

    assert (was.status, known.status) == (CaseStatus.ASSIGNED, CaseStatus.OPENED)


async def test_a_state_as_of_a_past_recorded_moment_changes_when_a_late_delivery_arrives(
    deps: AuditDeps, read_models: SqliteReadModelStore
) -> None:
    """The README's "A recent moment is not final": audit answers from what it has received.
    The assignment, recorded on day 3, is delivered after the question for day 4 was asked."""
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    opened, assessed, assigned, _closed = late_recorded_case()
    for recorded in (opened, assessed):
        await handler(recorded)
    as_of = T0 + 4 * DAY
    before = await queries.get_state_as_of(deps, AUDITOR, CASE, as_of, TimeBasis.RECORDED)
    await handler(assigned)
    after = await queries.get_state_as_of(deps, AUDITOR, CASE, as_of, TimeBasis.RECORDED)
    assert (before.status, after.status) == (CaseStatus.OPENED, CaseStatus.ASSIGNED)


@pytest.mark.usefixtures("received")
@pytest.mark.parametrize(
    ("basis", "moment"),
    [(TimeBasis.OCCURRED, T0 + DAY), (TimeBasis.RECORDED, T0 + 3 * DAY)],
)
async def test_an_event_at_exactly_as_of_counts_and_one_a_microsecond_later_does_not(
    deps: AuditDeps, basis: TimeBasis, moment: datetime
) -> None:
    # The assignment occurred at T0 + 1 day and was recorded at T0 + 3 days.
    micro = timedelta(microseconds=1)
    at = await queries.get_state_as_of(deps, AUDITOR, CASE, moment, basis)
    before = await queries.get_state_as_of(deps, AUDITOR, CASE, moment - micro, basis)
    assert (at.status, before.status) == (CaseStatus.ASSIGNED, CaseStatus.OPENED)
    for as_of, expected in ((moment, 3), (moment - micro, 2)):
        page = await queries.get_timeline(
            deps, AUDITOR, CASE, TimelineQuery(basis, as_of=as_of, without_accesses=True)
        )
        assert page.total == expected
    # since/until bound the same way: [moment, moment] holds the assignment alone.
    page = await queries.get_timeline(
        deps, AUDITOR, CASE, TimelineQuery(basis, since=moment, until=moment)
    )
    assert [e.event_type for e in page.entries] == ["casetrail.case.assigned"]


@pytest.mark.usefixtures("received")
async def test_each_disclosure_is_recorded_with_who_why_and_what(
    deps: AuditDeps, store: SqliteEventStore
) -> None:
    page = await queries.get_timeline(
        deps, AUDITOR, CASE, TimelineQuery(TimeBasis.OCCURRED), page_size=1
    )
    await queries.get_state_as_of(
        deps, SUPERVISOR, CASE, T0, TimeBasis.OCCURRED, principal=SUPERVISING
    )

    first, second = await accesses(store)
    assert [e.event_type for e in page.entries] == ["casetrail.case.opened"]
    assert (first.accessor_id, first.accessor_role, first.purpose) == (
        "auditor-kim",
        Role.AUDITOR,
        AccessPurpose.CONFIDENTIALITY_REVIEW,
    )
    assert first.sections == (RecordSection.IDENTITY, RecordSection.ASSESSMENT)
    assert second.accessor_id == "super-sam"
    assert RecordSection.ASSIGNMENT in second.sections
    recorded = await store.read_all(0)
    assert {r.metadata.source for r in recorded} == {SERVICE_SOURCE}
    assert recorded[0].metadata.actor == AUDITOR.actor


@pytest.mark.usefixtures("received")
async def test_access_events_join_the_case_history(
    deps: AuditDeps, store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    await queries.get_timeline(deps, AUDITOR, CASE, TimelineQuery(TimeBasis.RECORDED))
    await catch_up(store, read_models, TimelineProjection())  # what the service host runs

    page = await queries.who_did_what(
        deps, SUPERVISOR, CASE, TimeBasis.RECORDED, principal=SUPERVISING
    )
    assert page.next_cursor is None
    viewed = [a for a in page.activities if a.recorded.event_type == RecordAccessed.event_type]
    assert [a.recorded.metadata.actor.user_id for a in viewed] == ["auditor-kim"]
    assert viewed[0].summary.startswith("viewed identity, assessment, assignment, discharge")

    log = await queries.get_access_log(deps, AUDITOR, CASE)
    # The timeline's copy and the store's copy of the first access are one access.
    who = [e.metadata.actor.user_id for e in log.entries]
    assert who == ["auditor-kim", "super-sam", "auditor-kim"]
    assert log.next_cursor is None


@pytest.mark.usefixtures("received")
async def test_the_access_log_pages_forward_and_its_last_page_has_this_very_read(
    deps: AuditDeps, store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    """Seven reads taken into the timeline, then pages of three; the access each page call
    records is in audit's own store only (the timeline has not caught up), yet the last page
    lists them, in their place."""
    for _ in range(7):
        await queries.get_timeline(deps, AUDITOR, CASE, TimelineQuery(TimeBasis.RECORDED))
    await catch_up(store, read_models, TimelineProjection())
    pages: list[list[RecordedEvent]] = []
    cursor = None
    while True:
        page = await queries.get_access_log(deps, AUDITOR, CASE, page_size=3, cursor=cursor)
        pages.append(page.entries)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    # 7 taken in and one more per page call: 11 in all, the last two on the fourth page.
    assert [len(entries) for entries in pages] == [3, 3, 3, 2]
    listed = [e.event_id for entries in pages for e in entries]
    everything = [e.event_id for e in await store.read_all(0) if e.stream == f"access-{CASE}"]
    assert listed == everything
    assert await read_models.applied_position(TimelineProjection.name) == 7


async def test_the_access_log_lists_an_access_of_a_list_answered_a_moment_ago(
    deps: AuditDeps, store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    """A list's accesses go to one append of their own (an ``access-batch-…`` stream) in
    audit's store: the case's log has them at once, before the timeline takes them in."""
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in [*late_recorded_case(), *late_recorded_case("case-0043")]:
        await handler(recorded)
    found = await queries.find_cases_of_client(deps, AUDITOR, [CASE, "case-0043"], client_id=CLIENT)
    assert found.case_ids == [CASE, "case-0043"]
    (batch,) = {r.stream for r in await store.read_all(0)}
    assert batch.startswith("access-batch-")

    log = await queries.get_access_log(deps, AUDITOR, "case-0043")
    (listed,) = [e.event for e in log.entries if e.stream == batch]
    assert isinstance(listed, RecordAccessed)
    assert (listed.case_id, listed.sections) == ("case-0043", (RecordSection.IDENTITY,))


async def test_a_client_with_more_cases_than_listed_is_answered_truncated(
    deps: AuditDeps,
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proto promises at most 1,000 cases; only those listed are recorded as read."""
    monkeypatch.setattr(queries, "CASES_OF_CLIENT", 1)
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in [*late_recorded_case(), *late_recorded_case("case-0043")]:
        await handler(recorded)

    found = await queries.find_cases_of_client(deps, AUDITOR, [CASE, "case-0043"], client_id=CLIENT)

    assert (found.case_ids, found.truncated) == ([CASE], True)
    assert [event.case_id for event in await accesses(store)] == [CASE]
    monkeypatch.setattr(queries, "CASES_OF_CLIENT", 2)
    found = await queries.find_cases_of_client(deps, AUDITOR, [CASE, "case-0043"], client_id=CLIENT)
    assert (found.case_ids, found.truncated) == ([CASE, "case-0043"], False)


@pytest.mark.usefixtures("received")
@pytest.mark.parametrize(
    "viewer",
    [
        CASE_MANAGER,
        QueryContext(Actor("coord-carla", Role.COORDINATOR), AccessPurpose.COORDINATION),
        QueryContext(Actor("c1", Role.CLIENT), AccessPurpose.CLIENT_REQUEST),
    ],
)
async def test_only_oversight_roles_may_read_and_each_refusal_is_recorded(
    deps: AuditDeps, store: SqliteEventStore, viewer: QueryContext
) -> None:
    with pytest.raises(NotAllowed):
        await queries.get_timeline(deps, viewer, CASE, TimelineQuery(TimeBasis.OCCURRED))
    with pytest.raises(NotAllowed):
        await queries.export_case(deps, viewer, CASE, TimeBasis.OCCURRED)
    with pytest.raises(NotAllowed):
        await queries.get_access_log(deps, viewer, CASE)

    recorded = await access_events(store)
    assert [type(e) for e in recorded] == [RecordAccessDenied] * 3
    assert {e.accessor_id for e in recorded if isinstance(e, RecordAccessDenied)} == {
        viewer.actor.user_id
    }


UNKNOWN = "case-unknown"
WEST = Principal("super-sue", Role.SUPERVISOR, DEFAULT_HOME_AGENCY, "test", team="team-west")
"""A supervisor of another team than the case's (team-east)."""
SUPERVISOR_OF_WEST = QueryContext(Actor("super-sue", Role.SUPERVISOR), AccessPurpose.SUPERVISION)

Asking = Callable[[AuditDeps, QueryContext, str, Principal | None], Awaitable[object]]
PER_CASE_QUERIES: dict[str, Asking] = {
    "GetTimeline": lambda deps, viewer, case_id, principal: queries.get_timeline(
        deps, viewer, case_id, TimelineQuery(TimeBasis.OCCURRED), principal=principal
    ),
    "GetCaseStateAsOf": lambda deps, viewer, case_id, principal: queries.get_state_as_of(
        deps, viewer, case_id, T0 + DAY, TimeBasis.RECORDED, principal
    ),
    "WhoDidWhat": lambda deps, viewer, case_id, principal: queries.who_did_what(
        deps, viewer, case_id, TimeBasis.RECORDED, principal=principal
    ),
    "ExportCase": lambda deps, viewer, case_id, principal: queries.export_case(
        deps, viewer, case_id, TimeBasis.OCCURRED, principal
    ),
    "GetAccessLog": lambda deps, viewer, case_id, principal: queries.get_access_log(
        deps, viewer, case_id, principal
    ),
}


@pytest.mark.parametrize("ask", PER_CASE_QUERIES.values(), ids=PER_CASE_QUERIES.keys())
async def test_an_unknown_case_is_not_found_and_nothing_is_recorded(
    deps: AuditDeps, store: SqliteEventStore, ask: Asking
) -> None:
    """Told to a caller the policy would let read the case: nothing of it is disclosed."""
    with pytest.raises(CaseNotFound):
        await ask(deps, AUDITOR, UNKNOWN, None)
    assert await store.last_position() == 0


@pytest.mark.usefixtures("received")
@pytest.mark.parametrize("ask", PER_CASE_QUERIES.values(), ids=PER_CASE_QUERIES.keys())
async def test_a_caller_refused_a_real_case_is_refused_an_unknown_id_alike_and_on_the_record(
    deps: AuditDeps, store: SqliteEventStore, ask: Asking
) -> None:
    """A supervisor of another team was told NOT_FOUND, with nothing recorded, for an id audit
    has no event of, and refused on the record for a real case: asking told which ids are
    real. The unknown id is decided on the facts of a case with none, as intake decides."""
    refusals: list[AccessDenied] = []
    for case_id in (CASE, UNKNOWN):
        with pytest.raises(AccessDenied) as refused:
            await ask(deps, SUPERVISOR_OF_WEST, case_id, WEST)
        refusals.append(refused.value)

    real, unknown = refusals
    assert (unknown.reason, unknown.args, unknown.details) == (
        real.reason,
        real.args,
        real.details,
    )
    assert real.reason == "NO_RELATIONSHIP"
    recorded = await access_events(store)
    assert [(type(e), e.subject) for e in recorded] == [
        (RecordAccessDenied, CASE),
        (RecordAccessDenied, UNKNOWN),
    ]
    assert {e.rule for e in recorded if isinstance(e, RecordAccessDenied)} == {"no-relationship"}


@pytest.mark.usefixtures("received")
async def test_an_accessor_id_the_catalog_refuses_names_the_request_field(
    deps: AuditDeps, store: SqliteEventStore
) -> None:
    viewer = QueryContext(Actor("kim@agency", Role.AUDITOR), AccessPurpose.CONFIDENTIALITY_REVIEW)
    with pytest.raises(InvalidCommand) as refused:
        await queries.get_timeline(deps, viewer, CASE, TimelineQuery(TimeBasis.OCCURRED))

    # The accessor is the token's subject: the field to name is the credential.
    assert [v.field for v in refused.value.violations] == ["authorization"]
    assert await store.last_position() == 0


@pytest.mark.usefixtures("received")
async def test_pages_never_repeat_an_entry_when_an_earlier_event_arrives(
    deps: AuditDeps, read_models: SqliteReadModelStore
) -> None:
    first = await queries.get_timeline(
        deps, AUDITOR, CASE, TimelineQuery(TimeBasis.OCCURRED), page_size=2
    )
    assert first.next_cursor is not None
    assert first.total == 4

    late = coordination()
    late.sequence = 2  # the coordination stream already holds two events
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    await handler(
        late.record(
            coordination_note(),
            occurred_at=T0 + DAY / 24,  # between the two entries already shown
            recorded_at=T0 + 6 * DAY,
        )
    )

    second = await queries.get_timeline(
        deps,
        AUDITOR,
        CASE,
        TimelineQuery(TimeBasis.OCCURRED),
        page_size=2,
        cursor=first.next_cursor,
    )
    seen = [e.event_id for e in first.entries]
    assert not {e.event_id for e in second.entries} & set(seen)
    assert [e.event_type for e in second.entries] == [
        "casetrail.case.assigned",
        "casetrail.case.closed",
    ]
    assert second.next_cursor is None
    assert second.total == 5


@pytest.mark.usefixtures("received")
async def test_timeline_as_of_a_moment_on_either_clock(deps: AuditDeps) -> None:
    was = await queries.get_timeline(
        deps, AUDITOR, CASE, TimelineQuery(TimeBasis.OCCURRED, as_of=T0 + 2 * DAY)
    )
    known = await queries.get_timeline(
        deps, AUDITOR, CASE, TimelineQuery(TimeBasis.RECORDED, as_of=T0 + 2 * DAY)
    )
    assert was.total == 3
    assert known.total == 2


async def test_export_round_trips_through_cloudevents(
    deps: AuditDeps, registry: EventRegistry, received: list[RecordedEvent]
) -> None:
    export = await queries.export_case(deps, AUDITOR, CASE, TimeBasis.OCCURRED)
    exported = [recorded async for page in export.pages for recorded in page]
    text = "".join(iter_json_lines(exported))

    assert from_json_lines(text, registry) == exported == received
    # The first pass's extent, which audit signs: the pages' lines, the opening its carrier.
    assert export.extent.lines == len(exported)
    (opening,) = [r.event_id for r in exported if r.event_type == "casetrail.case.opened"]
    assert export.extent.carrier == opening


async def test_an_export_hands_out_by_pages_exactly_the_events_its_access_names(
    deps: AuditDeps,
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    received: list[RecordedEvent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queries, "EXPORT_PAGE", 2)
    pages = (await queries.export_case(deps, AUDITOR, CASE, TimeBasis.OCCURRED)).pages
    # Audit receives an event of the case (placed early on its clock) after the export's
    # access was recorded: the export leaves it out.
    late = coordination().record(coordination_note(), occurred_at=T0)
    await BusProjectionHandler(read_models, TimelineProjection(), service="audit")(late)

    handed = [page async for page in pages]
    assert all(1 <= len(page) <= 2 for page in handed)
    exported = [recorded for page in handed for recorded in page]
    assert exported == history.view(received, TimeBasis.OCCURRED)
    (access,) = await accesses(store)
    events = [recorded.event for recorded in received]
    assert access.sections == sections_disclosed(events)
    assert list(access.fields) == sensitive_fields_shown(events)


def coordination_note() -> RecordAccessed:
    """Any case event will do; a coordinator viewing the plan is one coordination records."""
    return RecordAccessed(
        case_id=CASE,
        accessor_id="coord-carla",
        accessor_role=Role.COORDINATOR,
        purpose=AccessPurpose.COORDINATION,
        sections=(RecordSection.PLAN,),
        rule="agency-coordinator",
        policy_version="test",
    )


@pytest.mark.usefixtures("received")
async def test_timeline_filters_by_type_actor_and_period(deps: AuditDeps) -> None:
    async def types(query: TimelineQuery) -> list[str]:
        page = await queries.get_timeline(deps, AUDITOR, CASE, query)
        assert page.total == len(page.entries)
        return [e.event_type for e in page.entries]

    occurred = TimeBasis.OCCURRED
    assert await types(
        TimelineQuery(occurred, event_types=frozenset({"casetrail.case.closed"}))
    ) == ["casetrail.case.closed"]
    assert await types(TimelineQuery(occurred, actor_id="coord-carla")) == [
        "casetrail.case.assigned",
        "casetrail.case.closed",
    ]
    # The assignment occurred on day 1 but was recorded on day 3: periods follow the clock.
    assert await types(TimelineQuery(occurred, since=T0 + DAY, until=T0 + DAY)) == [
        "casetrail.case.assigned"
    ]
    assert await types(TimelineQuery(TimeBasis.RECORDED, since=T0 + DAY, until=T0 + 4 * DAY)) == [
        "casetrail.case.assigned"
    ]
    assert await types(TimelineQuery(occurred, actor_id="nobody")) == []


@pytest.mark.usefixtures("received")
async def test_access_events_can_be_left_out_of_the_timeline(
    deps: AuditDeps, store: SqliteEventStore, read_models: SqliteReadModelStore
) -> None:
    for _ in range(3):
        await queries.get_timeline(deps, AUDITOR, CASE, TimelineQuery(TimeBasis.OCCURRED))
    await catch_up(store, read_models, TimelineProjection())

    everything = await queries.get_timeline(deps, AUDITOR, CASE, TimelineQuery(TimeBasis.OCCURRED))
    history = await queries.get_timeline(
        deps, AUDITOR, CASE, TimelineQuery(TimeBasis.OCCURRED, without_accesses=True)
    )
    only_reads = await queries.get_timeline(
        deps,
        AUDITOR,
        CASE,
        TimelineQuery(TimeBasis.OCCURRED, event_types=frozenset({RecordAccessed.event_type})),
    )
    assert (everything.total, history.total, only_reads.total) == (7, 4, 3)
    assert RecordAccessed.event_type not in {e.event_type for e in history.entries}


@pytest.mark.usefixtures("received")
async def test_pages_go_forward_and_back(deps: AuditDeps) -> None:
    query = TimelineQuery(TimeBasis.RECORDED)
    first = await queries.get_timeline(deps, AUDITOR, CASE, query, page_size=3)
    assert first.previous_cursor is None
    assert first.next_cursor is not None
    second = await queries.get_timeline(
        deps, AUDITOR, CASE, query, page_size=3, cursor=first.next_cursor
    )
    assert second.next_cursor is None
    assert second.previous_cursor is not None
    back = await queries.get_timeline(
        deps, AUDITOR, CASE, query, page_size=3, cursor=second.previous_cursor
    )
    assert [e.event_id for e in back.entries] == [e.event_id for e in first.entries]
    assert back.previous_cursor is None
    assert back.next_cursor == first.next_cursor


@pytest.mark.usefixtures("received")
async def test_a_case_is_found_by_its_client_as_the_policy_allows(
    deps: AuditDeps, store: SqliteEventStore
) -> None:
    assert (
        await queries.find_cases_of_client(deps, AUDITOR, [CASE], client_id=CLIENT)
    ).case_ids == [CASE]
    assert (await queries.find_cases_of_client(deps, AUDITOR, [], client_id=CLIENT)).case_ids == []
    lookup = (await accesses(store))[-1]
    assert (lookup.case_id, lookup.sections) == (CASE, (RecordSection.IDENTITY,))

    # A case manager with no relation to the case: the case is left out, the refusal recorded.
    assert (
        await queries.find_cases_of_client(deps, CASE_MANAGER, [CASE], client_id=CLIENT)
    ).case_ids == []
    refused = (await access_events(store))[-1]
    assert isinstance(refused, RecordAccessDenied)
    assert refused.case_id == CASE


@pytest.mark.usefixtures("received")
@pytest.mark.parametrize(
    ("viewer", "principal"), [(AUDITOR, None), (SUPERVISOR, SUPERVISING)], ids=["auditor", "team"]
)
async def test_a_case_of_the_client_the_timeline_does_not_hold_yet_is_left_out_unnamed(
    deps: AuditDeps, store: SqliteEventStore, viewer: QueryContext, principal: Principal | None
) -> None:
    """The client index and the timeline are fed by consumer groups of their own: the index
    may know a case whose events have not reached the timeline. It was answered NOT_FOUND
    naming that case, which the caller never asked about; it is left out, as the accounting
    of disclosures leaves it, and nothing of it is recorded."""
    lagging = "case-0043"

    found = await queries.find_cases_of_client(
        deps, viewer, [CASE, lagging], principal, client_id=CLIENT
    )

    assert (found.case_ids, found.truncated) == ([CASE], False)
    recorded = await access_events(store)
    assert [(type(e), e.subject) for e in recorded] == [(RecordAccessed, CASE)]


@pytest.mark.usefixtures("received")
async def test_an_empty_filtered_page_is_recorded_under_the_section_it_is_about(
    deps: AuditDeps, store: SqliteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "No contact logged" and "this actor did nothing" tell of the case: such a page was
    answered with nothing recorded. Recorded under the sections of the types asked (every
    section when the view names none), before it is answered."""
    contacts = TimelineQuery(TimeBasis.OCCURRED, event_types=frozenset({ContactLogged.event_type}))
    page = await queries.get_timeline(deps, SUPERVISOR, CASE, contacts, principal=SUPERVISING)
    assert (page.entries, page.total) == ([], 0)
    (read,) = await accesses(store)
    assert (read.case_id, read.accessor_id, read.sections, read.fields) == (
        CASE,
        "super-sam",
        (RecordSection.CONTACTS,),
        (),
    )

    nothing = await queries.who_did_what(deps, AUDITOR, CASE, TimeBasis.RECORDED, actor_id="nobody")
    assert nothing.activities == []
    assert (await accesses(store))[-1].sections == tuple(RecordSection)

    async def unrecordable(*args: object, **kwargs: object) -> list[RecordedEvent]:
        raise RuntimeError("the store is down")

    # Recorded before it is answered: no record, no page.
    monkeypatch.setattr(store, "append", unrecordable)
    with pytest.raises(RuntimeError):
        await queries.get_timeline(deps, AUDITOR, CASE, contacts)


async def test_an_export_holds_the_clients_events_and_its_access_names_them(
    deps: AuditDeps,
    registry: EventRegistry,
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
    received: list[RecordedEvent],
) -> None:
    """The client's registration (before the case), date of birth corrected (during it) and
    hold take their place in the export, and the recorded access names their section
    (identity) and sensitive fields as it does the case's own."""
    client = client_history()
    handler = BusProjectionHandler(read_models, ClientTrailProjection(), service="audit")
    for recorded in client:
        await handler(recorded)

    pages = (await queries.export_case(deps, AUDITOR, CASE, TimeBasis.OCCURRED)).pages
    exported = [recorded async for page in pages for recorded in page]

    assert exported == history.view([*received, *client], TimeBasis.OCCURRED)
    assert from_json_lines("".join(iter_json_lines(exported)), registry) == exported
    (access,) = await accesses(store)
    assert RecordSection.IDENTITY in access.sections
    events = [recorded.event for recorded in exported]
    assert access.sections == sections_disclosed(events)
    assert list(access.fields) == sensitive_fields_shown(events)
    page = await queries.who_did_what(deps, AUDITOR, CASE, TimeBasis.RECORDED)
    assert f"corrected the date of birth of client {CLIENT}" in [a.summary for a in page.activities]


async def test_the_state_as_of_a_moment_shows_the_clients_record_then(
    deps: AuditDeps, read_models: SqliteReadModelStore, received: list[RecordedEvent]
) -> None:
    """The date of birth corrected on day 2 (recorded on day 4) is the client's on the
    occurred clock from day 2 and on the recorded clock from day 4; a hold stands from day 6
    to day 7; the erasure empties the date. Before the case existed, nothing of the client."""
    client = client_history()
    erased = Producer("casetrail/intake", f"client-{CLIENT}").record(
        ClientErased(client_id=CLIENT, case_ids=(CASE,), request_reference="dms://r/1"),
        occurred_at=T0 + 9 * DAY,
    )
    handler = BusProjectionHandler(read_models, ClientTrailProjection(), service="audit")
    for recorded in [*client, erased]:
        await handler(recorded)

    async def record(moment: datetime, basis: TimeBasis) -> ClientRecord:
        state = await queries.get_state_as_of(deps, AUDITOR, CASE, moment, basis)
        return state.client

    wrong, right = date(1914, 6, 2), date(1941, 6, 2)
    day3 = T0 + 3 * DAY
    assert await record(T0 - DAY, TimeBasis.OCCURRED) == ClientRecord()  # no case yet
    assert await record(T0, TimeBasis.OCCURRED) == ClientRecord(wrong)
    assert await record(day3, TimeBasis.OCCURRED) == ClientRecord(right)
    assert await record(day3, TimeBasis.RECORDED) == ClientRecord(wrong)
    assert await record(T0 + 6 * DAY, TimeBasis.RECORDED) == ClientRecord(right, ("hold-1",))
    assert await record(T0 + 7 * DAY, TimeBasis.RECORDED) == ClientRecord(right)
    assert await record(T0 + 9 * DAY, TimeBasis.RECORDED) == ClientRecord(None, (), erased=True)
    state = await queries.get_state_as_of(deps, AUDITOR, CASE, day3, TimeBasis.OCCURRED)
    assert state.events_applied == len(history.view(received, TimeBasis.OCCURRED, day3))


class _Counting:
    """The timelines, counting the most events one read hands back."""

    def __init__(self, timelines: queries.CaseTimelines) -> None:
        self._timelines = timelines
        self.most = 0

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[_Counting]:
        """A snapshot's reads (a pass over the case reads one), counted too."""
        async with self._timelines.snapshot() as timelines:
            counting = _Counting(timelines)
            try:
                yield counting
            finally:
                self.most = max(self.most, counting.most)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._timelines, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            answer = await method(*args, **kwargs)
            held = answer.entries if isinstance(answer, IndexPage) else answer
            if isinstance(held, list) and held and isinstance(held[0], RecordedEvent):
                self.most = max(self.most, len(held))
            return answer

        return counted


async def test_the_state_as_of_a_moment_holds_a_page_of_the_case_never_all_of_it(
    deps: AuditDeps, read_models: SqliteReadModelStore, received: list[RecordedEvent]
) -> None:
    """A case worked for years holds 100,000 events: the state was folded from the whole case
    read and decoded at once, whatever the moment (memory grew with the case). It is folded a
    page at a time, from the index up to the moment, and is the fold of the whole view."""
    desk = Producer("casetrail/planning", f"case-{CASE}")
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    contacts = [
        desk.record(
            ContactLogged(
                case_id=CASE, contact_id=f"contact-{n}", kind=ContactKind.PHONE_CALL, summary="ok"
            ),
            occurred_at=T0 + timedelta(minutes=n + 1),
        )
        for n in range(3 * queries.EXPORT_PAGE)
    ]
    for recorded in contacts:
        await handler(recorded)
    client = client_history()
    trail = BusProjectionHandler(read_models, ClientTrailProjection(), service="audit")
    for recorded in client:
        await trail(recorded)
    counting = _Counting(deps.timelines)
    paged = AuditDeps(cast(queries.CaseTimelines, counting), deps.store, deps.access)

    for basis, moment in [(TimeBasis.OCCURRED, T0 + 8 * DAY), (TimeBasis.RECORDED, T0 + DAY)]:
        state = await queries.get_state_as_of(paged, AUDITOR, CASE, moment, basis)
        whole = fold(CASE, history.view([*received, *contacts], basis, moment), basis)
        assert state == replace(whole, client=client_fold(history.view(client, basis, moment)))
        assert state.events_applied > queries.EXPORT_PAGE
    assert counting.most <= queries.EXPORT_PAGE


async def test_the_case_as_a_user_saw_it_holds_a_page_of_the_case_never_all_of_it(
    deps: AuditDeps, read_models: SqliteReadModelStore, received: list[RecordedEvent]
) -> None:
    """GetCaseAsSeen read and decoded the case's whole history too (for the facts, the
    emergency accesses and the state): now a page at a time, up to the moment."""
    desk = Producer("casetrail/planning", f"case-{CASE}")
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for n in range(3 * queries.EXPORT_PAGE):
        contact = ContactLogged(
            case_id=CASE, contact_id=f"contact-{n}", kind=ContactKind.PHONE_CALL, summary="ok"
        )
        await handler(desk.record(contact, occurred_at=T0 + 4 * DAY + timedelta(minutes=n)))
    counting = _Counting(deps.timelines)
    paged = AuditDeps(cast(queries.CaseTimelines, counting), deps.store, deps.access)
    at = T0 + 8 * DAY
    claims = as_seen.UserClaims("worker-ana", Role.SOCIAL_WORKER, purpose=AccessPurpose.DIRECT_CARE)

    seen = await as_seen.case_as_seen(paged, AUDITOR, CASE, claims, at, state_rendering(at))

    assert seen.entitlement.allowed
    assert (seen.user.principal.team, seen.user.derived_from["team"]) == ("team-east", "assignment")
    state = cast(audit_pb2.CaseState, seen.state)
    assert (state.events_applied, state.status) == (
        len(received) + 3 * queries.EXPORT_PAGE,
        audit_pb2.CASE_STATUS_CLOSED,
    )
    assert counting.most <= queries.EXPORT_PAGE
