"""The audit queries. Each checks the viewer's role, reads the case's history, records what
it is about to disclose, and only then returns it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from events.catalog.access import RecordAccessed, RecordSection
from events.envelope import RecordedEvent
from events.queries import QueryContext
from events.store.port import EventStore
from services.audit.app.handlers import record_access
from services.audit.domain import history
from services.audit.domain.access import (
    STATE_SECTIONS,
    AuditQuery,
    access_stream,
    check_allowed,
    sections_disclosed,
)
from services.audit.domain.case_state import CaseState, fold
from services.audit.domain.errors import CaseNotFound
from services.audit.domain.history import SortKey, TimeBasis
from services.audit.domain.summaries import summary


class CaseTimelines(Protocol):
    async def events_of(self, case_id: str) -> list[RecordedEvent]:
        """Every event audit has received for the case, in no particular order."""
        ...


@dataclass(frozen=True)
class AuditDeps:
    timelines: CaseTimelines
    store: EventStore
    """Audit's own store, where accesses are recorded."""


@dataclass(frozen=True)
class TimelinePage:
    entries: list[RecordedEvent]
    next_cursor: SortKey | None
    total: int


@dataclass(frozen=True)
class Activity:
    recorded: RecordedEvent
    summary: str


async def get_timeline(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    basis: TimeBasis,
    *,
    as_of: datetime | None = None,
    page_size: int = 100,
    cursor: SortKey | None = None,
) -> TimelinePage:
    check_allowed(viewer.actor, AuditQuery.TIMELINE)
    ordered = history.view(await _history(deps, case_id), basis, as_of)
    start = 0 if cursor is None else history.after(ordered, basis, cursor)
    entries = ordered[start : start + page_size]
    more = start + page_size < len(ordered)
    await record_access(deps.store, viewer, case_id, sections_disclosed(e.event for e in entries))
    next_cursor = history.sort_key(entries[-1], basis) if more and entries else None
    return TimelinePage(entries, next_cursor, len(ordered))


async def get_state_as_of(
    deps: AuditDeps, viewer: QueryContext, case_id: str, as_of: datetime, basis: TimeBasis
) -> CaseState:
    check_allowed(viewer.actor, AuditQuery.STATE)
    ordered = history.view(await _history(deps, case_id), basis, as_of)
    state = fold(case_id, ordered, basis)
    await record_access(deps.store, viewer, case_id, STATE_SECTIONS)
    return state


async def who_did_what(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    basis: TimeBasis,
    *,
    actor_id: str | None = None,
) -> list[Activity]:
    check_allowed(viewer.actor, AuditQuery.ACTIVITY)
    ordered = history.view(await _history(deps, case_id), basis)
    chosen = [e for e in ordered if actor_id is None or e.metadata.actor.user_id == actor_id]
    await record_access(deps.store, viewer, case_id, sections_disclosed(e.event for e in chosen))
    return [Activity(recorded, summary(recorded.event)) for recorded in chosen]


async def export_case(
    deps: AuditDeps, viewer: QueryContext, case_id: str, basis: TimeBasis
) -> list[RecordedEvent]:
    """The whole history, for ``events.cloudevents.iter_json_lines``."""
    check_allowed(viewer.actor, AuditQuery.EXPORT)
    ordered = history.view(await _history(deps, case_id), basis)
    await record_access(deps.store, viewer, case_id, sections_disclosed(e.event for e in ordered))
    return ordered


async def get_access_log(
    deps: AuditDeps, viewer: QueryContext, case_id: str
) -> list[RecordedEvent]:
    """Every recorded access to the case, oldest first, this one included.

    Audit's own store answers at once (the timeline learns of new accesses a moment later);
    the timeline adds accesses recorded by any other service.
    """
    check_allowed(viewer.actor, AuditQuery.ACCESS_LOG)
    timeline = await _history(deps, case_id)
    await record_access(deps.store, viewer, case_id, (RecordSection.ACCESS_LOG,))
    own = await deps.store.read_stream(access_stream(case_id))
    merged = {e.event_id: e for e in [*timeline, *own] if isinstance(e.event, RecordAccessed)}
    return history.view(merged.values(), TimeBasis.OCCURRED)


async def _history(deps: AuditDeps, case_id: str) -> list[RecordedEvent]:
    events = await deps.timelines.events_of(case_id)
    if not events:
        raise CaseNotFound(case_id)
    return events
