"""The audit queries. Each checks the viewer's role, reads the case's history, records what
it is about to disclose, and only then returns it. Given the ``answer`` (the gRPC call), each
names in its trailing metadata the rule that decided, as every service's reads do."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol
from uuid import UUID

from casetrail_platform.commands import NotCaughtUp
from casetrail_platform.identity.principal import Principal
from casetrail_platform.ledger.export_note import ExportExtent
from casetrail_platform.policy.decide import any_rule_for
from casetrail_platform.policy.facts import Entry, no_case_of
from casetrail_platform.policy.guard import (
    AccessControl,
    AccessDenied,
    Answer,
    Disclosure,
    answerable,
)
from casetrail_platform.policy.vocabulary import Action, Decision
from casetrail_platform.queries import QueryContext
from casetrail_platform.store.port import EventStore
from events.catalog.access import (
    AccessPurpose,
    RecordAccessDenied,
    RecordAccessed,
    RecordSection,
)
from events.envelope import RecordedEvent
from services.audit.domain.access import (
    STATE_SECTIONS,
    sections_asked,
    sections_disclosed,
    sensitive_fields_shown,
)
from services.audit.domain.case_state import CaseFold, CaseState, client_fold
from services.audit.domain.errors import CaseNotFound
from services.audit.domain.history import (
    IndexPage,
    PageCursor,
    TimeBasis,
    TimelineQuery,
    within_bytes,
)
from services.audit.domain.others import (
    LOOKALIKES_PATH,
    NAMING_TYPES,
    OTHER_CASES_PATH,
    named,
    shown_without,
)
from services.audit.domain.summaries import summary


class CaseTimelines(Protocol):
    async def facts_of(self, case_id: str) -> list[Entry] | None:
        """The policy's fact entries of the case; ``None`` when audit has no event of it."""
        ...

    async def page(
        self,
        case_id: str,
        query: TimelineQuery,
        cursor: PageCursor | None,
        size: int,
        unindexed: Sequence[RecordedEvent] = (),
    ) -> IndexPage:
        """One page of the case's view, read from an index (never the whole case), with
        ``unindexed`` events (not in the index yet) merged in where they belong."""
        ...

    async def own_position(self) -> int:
        """The position in audit's own store up to which its events are in the timelines."""
        ...

    async def count(self, case_id: str, query: TimelineQuery) -> int: ...

    async def events_of(self, case_id: str) -> list[RecordedEvent]:
        """Every event audit has received for the case, in no particular order."""
        ...

    async def knows_client(self, client_id: str) -> bool:
        """Whether audit has received the client's registration."""
        ...

    def snapshot(self) -> contextlib.AbstractAsyncContextManager[CaseTimelines]:
        """The timelines as one commit holds them, whatever the projection applies meanwhile:
        what a pass over a case's pages reads (``case_pages``)."""
        ...


@dataclass(frozen=True)
class AuditDeps:
    timelines: CaseTimelines
    store: EventStore
    """Audit's own store, where accesses are recorded."""
    access: AccessControl


@dataclass(frozen=True)
class TimelinePage:
    entries: list[RecordedEvent]
    next_cursor: PageCursor | None
    previous_cursor: PageCursor | None
    total: int
    redacted: frozenset[UUID] = frozenset()
    """Entries shown with a part withheld (``NamedOthers``): their bytes are no longer the
    stored event's, so they carry no ledger leaf."""


class ClientCases(Protocol):
    async def cases_of(self, client_id: str) -> list[str]:
        """The ids of the client's cases audit knows of (empty for an unknown client)."""
        ...


@dataclass(frozen=True)
class NamedOthers:
    """What a view of one case shows of the other cases and clients its client's own events
    name (``domain.others``), each decided as the query that tells of it decides, and
    recorded: the erasure's other cases as ``FindCasesOfClient`` (``other_cases``), the
    registration's look-alike clients as intake's duplicate candidates (``lookalikes``). One
    withheld is left out of the event shown, and the path of its field listed in
    ``x-casetrail-redacted`` and the access record's ``redacted_fields``."""

    shown: tuple[Disclosure, ...] = ()
    """The disclosures of what is named, recorded with the view's."""
    withheld: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """The ids withheld, by the path of the field naming them."""

    def view(self, entries: Iterable[RecordedEvent]) -> tuple[list[RecordedEvent], dict[UUID, str]]:
        """``entries`` as shown, and the path withheld from each shown in part."""
        return shown_without(entries, self.withheld)

    @property
    def withheld_paths(self) -> tuple[str, ...]:
        """The paths of the fields something was withheld from."""
        return tuple(sorted(path for path, ids in self.withheld.items() if ids))

    def __add__(self, other: NamedOthers) -> NamedOthers:
        return NamedOthers((*self.shown, *other.shown), {**self.withheld, **other.withheld})


async def other_cases(
    deps: AuditDeps,
    viewer: QueryContext,
    who: Principal,
    action: Action,
    case_id: str,
    entries: Iterable[RecordedEvent],
) -> NamedOthers:
    """The client's other cases the erasures in ``entries`` name (``ClientErased.case_ids``):
    that the client has case B is what ``find_cases_of_client`` decides, so a view of case X
    names B only to a caller the policy lets take the same view of B (``action``), that
    disclosure recorded under B (section identity) with the view's, a refusal recorded here as
    the policy records one; B is withheld otherwise (``OTHER_CASES_PATH``). A case audit holds
    no event of yet is withheld undecided, as that look-up leaves it out."""
    named_cases = [other for other in named(entries, OTHER_CASES_PATH) if other != case_id]
    if not named_cases:
        return NamedOthers()
    received = await received_facts(deps, who, action, viewer.purpose, named_cases, subject=case_id)
    shown: list[Disclosure] = []
    for other, entries_of_other in received.items():
        try:
            allowed = await _decided(deps, viewer, who, action, other, entries_of_other)
        except AccessDenied:
            continue
        shown.append(Disclosure(other, allowed.decision, None, (), (RecordSection.IDENTITY,)))
    readable = {item.case_id for item in shown}
    return NamedOthers(tuple(shown), {OTHER_CASES_PATH: frozenset(named_cases) - readable})


LOOKALIKE_FIELDS = ("client_id",)
"""What a view of a case shows of a look-alike client: their id, recorded as the field read of
their identity (as intake records what a registration's refusal shows of a candidate)."""


async def lookalikes(
    deps: AuditDeps,
    viewer: QueryContext,
    who: Principal,
    case_id: str,
    entries: Iterable[RecordedEvent],
    client_cases: ClientCases | None,
) -> NamedOthers:
    """The clients the registrations in ``entries`` name as looking like the same person
    (``ClientRegistered.confirmed_not_duplicate_of``), each decided as intake decides a
    possible duplicate it shows: ``READ_CLIENT`` on each of their cases (on the client alone,
    ``no_case_of``, when audit's client index knows none), shown when one allows, that
    disclosure recorded with the view's under each case allowing it, with its own decision (a
    case refusing is not recorded as read); refused, the refusal recorded under the first.
    One is withheld otherwise (``LOOKALIKES_PATH``), undecided when its cases are known but
    audit holds no event of them yet, or this server keeps no client index."""
    named_clients = named(entries, LOOKALIKES_PATH)
    if not named_clients:
        return NamedOthers()
    shown: list[Disclosure] = []
    withheld: set[str] = set()
    for client_id in named_clients:
        decided = await _client_decisions(deps, viewer, who, client_id, client_cases, case_id)
        allowing = [(subject, decision) for subject, decision in decided if decision.allowed]
        if allowing:
            shown.extend(
                Disclosure(subject, decision, None, (), (RecordSection.IDENTITY,), LOOKALIKE_FIELDS)
                for subject, decision in allowing
            )
            continue
        withheld.add(client_id)
        if decided:
            with contextlib.suppress(AccessDenied):
                subject, refusal = decided[0]
                await deps.access.refuse(who, Action.READ_CLIENT, viewer.purpose, subject, refusal)
    return NamedOthers(tuple(shown), {LOOKALIKES_PATH: frozenset(withheld)})


async def _client_decisions(
    deps: AuditDeps,
    viewer: QueryContext,
    who: Principal,
    client_id: str,
    client_cases: ClientCases | None,
    subject: str,
) -> list[tuple[str, Decision]]:
    """The policy's decision to show who ``client_id`` is on each of their cases audit holds
    events of (``READ_CLIENT``; one that would not disclose the identity refuses), or on the
    client alone when the client index knows no case of them (``no_case_of``). Empty when this
    server keeps no client index, or audit holds none of their cases yet. Facts not caught up
    name ``subject``, the case viewed."""
    if client_cases is None:
        return []
    case_ids = await client_cases.cases_of(client_id)
    if not case_ids:
        facts = no_case_of(client_id)
        decision = deps.access.decide(who, Action.READ_CLIENT, viewer.purpose, facts)
        return [(client_id, _identity_shown(client_id, decision))]
    received = await received_facts(
        deps, who, Action.READ_CLIENT, viewer.purpose, case_ids, subject=subject
    )
    decisions: list[tuple[str, Decision]] = []
    for case_id, entries in received.items():
        facts = await deps.access.case_facts(case_id, entries)
        decision = deps.access.decide(who, Action.READ_CLIENT, viewer.purpose, facts)
        decisions.append((case_id, _identity_shown(case_id, decision)))
    return decisions


def _identity_shown(case_id: str, decision: Decision) -> Decision:
    """``decision``, or the refusal of one that does not disclose who the client is."""
    return answerable(Disclosure(case_id, decision, None, (), (RecordSection.IDENTITY,)))


@dataclass(frozen=True)
class Activity:
    recorded: RecordedEvent
    summary: str


async def get_timeline(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    query: TimelineQuery,
    *,
    page_size: int = 100,
    cursor: PageCursor | None = None,
    principal: Principal | None = None,
    answer: Answer | None = None,
    entry_bytes: Callable[[RecordedEvent], int] | None = None,
    page_bytes: int = 0,
    client_cases: ClientCases | None = None,
) -> TimelinePage:
    """One page of the view, from the timeline's index: its cost does not grow with the case.
    With ``entry_bytes`` (what an entry takes in the answer), the page holds no more entries
    than fit in ``page_bytes`` (one at least): large events end a page early, not the answer
    past gRPC's message limit. What is recorded as released is what the page holds; a page
    holding nothing, the sections its view is about (``_release``). The other cases and
    clients its client's events name are decided apart (``NamedOthers``; ``client_cases``:
    audit's client index, for the look-alike clients' cases)."""
    who = await _caller(deps, viewer, principal, Action.READ_TRAIL, case_id)
    allowed = await authorize_case(deps, viewer, who, Action.READ_TRAIL, case_id)
    backward = cursor is not None and cursor.backward
    page = await deps.timelines.page(case_id, query, cursor, page_size)
    if entry_bytes is not None:
        page = within_bytes(page, entry_bytes, page_bytes, backward=backward)
    total = await deps.timelines.count(case_id, query)
    others = await other_cases(deps, viewer, who, Action.READ_TRAIL, case_id, page.entries)
    others += await lookalikes(deps, viewer, who, case_id, page.entries, client_cases)
    entries, redacted = others.view(page.entries)
    await _release(deps, viewer, allowed, case_id, entries, query, answer=answer, others=others)
    first, last = (page.suffixes[0], page.suffixes[-1]) if page.suffixes else (None, None)
    # Read backward, the page came from a later one; read forward, from an earlier one.
    more_after = page.more if not backward else last is not None
    more_before = page.more if backward else cursor is not None and first is not None
    return TimelinePage(
        entries,
        PageCursor(last) if more_after and last is not None else None,
        PageCursor(first, backward=True) if more_before and first is not None else None,
        total,
        frozenset(redacted),
    )


async def get_state_as_of(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    as_of: datetime,
    basis: TimeBasis,
    principal: Principal | None = None,
    answer: Answer | None = None,
) -> CaseState:
    who = await _caller(deps, viewer, principal, Action.READ_TRAIL, case_id)
    allowed = await authorize_case(deps, viewer, who, Action.READ_TRAIL, case_id)
    # Folded a page at a time from the timeline's index, which stops at ``as_of`` on the
    # basis' clock: a case of 100,000 events was read and decoded whole, whatever the moment
    # (memory grew with the case: 26 MB traced at 4,000 contacts). Its access records change
    # nothing in it and are not read. The client's own events come in the same pages, in the
    # same order, from before the case's opening too.
    folding = CaseFold(case_id, basis)
    case_fields: set[str] = set()
    client: list[RecordedEvent] = []
    query = TimelineQuery(basis, as_of=as_of, without_accesses=True)
    async with deps.timelines.snapshot() as timelines:
        async for page in case_pages(timelines, case_id, query, EXPORT_PAGE):
            own = [recorded for recorded in page if recorded.event.subject_field == "case_id"]
            client.extend(r for r in page if r.event.subject_field != "case_id")
            for recorded in own:
                folding.apply(recorded)
            case_fields.update(sensitive_fields_shown(recorded.event for recorded in own))
    # A moment before the case's first event folds nothing: an empty state whose
    # events_applied of 0 says the case did not exist yet (the console shows it so).
    state = folding.state()
    # The client's record at the same moment on the same clock, once the case existed: the
    # case's decisions about the person (their age) rested on it.
    client = client if state.events_applied else []
    state = replace(state, client=client_fold(client))
    fields = case_fields.union(sensitive_fields_shown(recorded.event for recorded in client))
    await _record(deps, viewer, allowed, case_id, STATE_SECTIONS, sorted(fields), answer)
    return state


@dataclass(frozen=True)
class ActivityPage:
    activities: list[Activity]
    next_cursor: PageCursor | None


async def who_did_what(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    basis: TimeBasis,
    *,
    actor_id: str | None = None,
    page_size: int = 1000,
    cursor: PageCursor | None = None,
    principal: Principal | None = None,
    answer: Answer | None = None,
) -> ActivityPage:
    """A page of the case's events, access records included, each with its one-line summary,
    read from the timeline's index on ``basis``'s clock. ``cursor`` goes forward."""
    who = await _caller(deps, viewer, principal, Action.READ_TRAIL, case_id)
    allowed = await authorize_case(deps, viewer, who, Action.READ_TRAIL, case_id)
    query = TimelineQuery(basis, actor_id=actor_id)
    page = await deps.timelines.page(case_id, query, cursor, page_size)
    # The summaries count an erasure's cases; they name no look-alike client.
    others = await other_cases(deps, viewer, who, Action.READ_TRAIL, case_id, page.entries)
    entries, _ = others.view(page.entries)
    await _release(deps, viewer, allowed, case_id, entries, query, answer=answer, others=others)
    return ActivityPage(
        [Activity(recorded, summary(recorded.event)) for recorded in entries],
        cursor_after(page),
    )


EXPORT_PAGE = 100
"""Events an export holds in memory at once (a case read for years holds tens of thousands).
Decoding a page is one turn of the event loop the server takes new calls on: at 1,000 a few
exports at once kept calls waiting until gRPC core cancelled them (grpc_platform.capacity)."""


@dataclass(frozen=True)
class CaseExport:
    pages: AsyncIterator[list[RecordedEvent]]
    extent: ExportExtent
    """What the pages hold (lines, each stream's end and lines): audit's signed statement."""
    redacted: Mapping[UUID, str] = field(default_factory=dict)
    """Events the pages hold with a part withheld (``NamedOthers``), each with the path of the
    field withheld: their lines are no longer the stored event's, so they carry no proof;
    ``extent`` names each with its digest."""


async def export_case(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    basis: TimeBasis,
    principal: Principal | None = None,
    answer: Answer | None = None,
    client_cases: ClientCases | None = None,
) -> CaseExport:
    """The whole history in ``basis``'s order, page by page, for
    ``events.cloudevents.iter_json_lines``. What the export discloses (its sections and the
    sensitive fields present) is recorded before anything is handed out, from a first pass
    over the case that keeps only the events' ids and the extent they make; the pages then
    hand out exactly those events (one recorded meanwhile is left out: it is not in the
    recorded access, nor in the extent)."""
    who = await _caller(deps, viewer, principal, Action.EXPORT, case_id)
    allowed = await authorize_case(deps, viewer, who, Action.EXPORT, case_id)
    query = TimelineQuery(basis)
    ids: set[UUID] = set()
    extent = ExportExtent()
    sections: set[RecordSection] = set()
    fields: set[str] = set()
    naming: list[RecordedEvent] = []
    # One snapshot for the whole pass: the extent audit signs is of one state of the case.
    async with deps.timelines.snapshot() as timelines:
        async for page in case_pages(timelines, case_id, query, EXPORT_PAGE):
            ids.update(recorded.event_id for recorded in page)
            for recorded in page:
                extent.add(recorded)
            events = [recorded.event for recorded in page]
            sections.update(sections_disclosed(events))
            fields.update(sensitive_fields_shown(events))
            naming.extend(r for r in page if r.event_type in NAMING_TYPES)
    others = await other_cases(deps, viewer, who, Action.EXPORT, case_id, naming)
    others += await lookalikes(deps, viewer, who, case_id, naming, client_cases)
    shown, redacted = others.view(naming)
    for recorded in shown:
        if recorded.event_id in redacted:
            # Audit's statement names the line as shown: `casetrail verify` accepts it by that.
            extent.withhold(recorded)
    ordered_sections = tuple(section for section in RecordSection if section in sections)
    if not ids:
        # An export that holds nothing tells that the case holds nothing: recorded as a page
        # that shows nothing is (``_release``).
        ordered_sections = sections_asked(query)
    await _record(deps, viewer, allowed, case_id, ordered_sections, sorted(fields), answer, others)
    return CaseExport(_pages_of(deps, case_id, query, ids, others), extent, redacted)


def cursor_after(page: IndexPage) -> PageCursor | None:
    """Where the page after ``page`` (read forward) starts; None after the last page."""
    return PageCursor(page.suffixes[-1]) if page.more and page.suffixes else None


async def case_pages(
    timelines: CaseTimelines, case_id: str, query: TimelineQuery, size: int
) -> AsyncIterator[list[RecordedEvent]]:
    """The case's view ``query`` from its first page to its last, ``size`` events a page. A
    pass that must see the case whole reads a snapshot (``CaseTimelines.snapshot``): pages
    read apart from the live index while the projection applies events saw one dated after
    the cursor and missed one of the same stream dated before it (a late write-up), so an
    export left a hole in its stream and signed that extent, and a state as of a moment folded
    a reopening without the closure before it."""
    cursor: PageCursor | None = None
    while True:
        page = await timelines.page(case_id, query, cursor, size)
        if page.entries:
            yield page.entries
        cursor = cursor_after(page)
        if cursor is None:
            return


async def _pages_of(
    deps: AuditDeps, case_id: str, query: TimelineQuery, ids: set[UUID], others: NamedOthers
) -> AsyncIterator[list[RecordedEvent]]:
    # No snapshot: the pages go out at the caller's pace, and the first pass chose their
    # events (``ids``), whose index keys never move.
    async for page in case_pages(deps.timelines, case_id, query, EXPORT_PAGE):
        chosen = [recorded for recorded in page if recorded.event_id in ids]
        if chosen:
            yield others.view(chosen)[0]


ACCESS_LOG = TimelineQuery(
    TimeBasis.OCCURRED,
    event_types=frozenset({RecordAccessed.event_type, RecordAccessDenied.event_type}),
)
"""The access log: a case's accessed and denied records on the occurred clock."""


@dataclass(frozen=True)
class AccessLogPage:
    entries: list[RecordedEvent]
    """Accesses and refusals, oldest first."""
    next_cursor: PageCursor | None


OWN_UNINDEXED = 20_000
"""Events of audit's own store past the timeline's position a ``get_access_log`` call reads at
most: while the timeline keeps up that is a moment's worth; after a rebuild (position 0) it
would be the whole store, read on every call. Past this the call is UNAVAILABLE, retryable."""

_OWN_BATCH = 1000


async def get_access_log(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    principal: Principal | None = None,
    answer: Answer | None = None,
    *,
    page_size: int = 100,
    cursor: PageCursor | None = None,
) -> AccessLogPage:
    """A page of the recorded accesses to the case and its refusals, oldest first, read from
    the timeline's index (a case read for years holds tens of thousands); the last page
    includes this one. ``cursor`` goes forward (a token of the next page).

    Audit's own store answers at once: its accesses the timeline has not taken in yet (this
    one, at least) are merged into the page where they belong, read from at most
    ``OWN_UNINDEXED`` events of it. When more than that are waiting (a timeline rebuilt, or
    far behind) the call is ``NotCaughtUp`` (UNAVAILABLE, retry): a page without them would
    silently leave out accesses. That is decided after the policy (a refusal is recorded as
    ever) and before this read is recorded, since nothing is disclosed.
    """
    who = await _caller(deps, viewer, principal, Action.READ_TRAIL, case_id)
    allowed = await authorize_case(deps, viewer, who, Action.READ_TRAIL, case_id)
    after = await deps.timelines.own_position()
    if await deps.store.last_position() - after > OWN_UNINDEXED:
        raise NotCaughtUp(_OWN_ACCESSES, case_id)
    await _record(deps, viewer, allowed, case_id, (RecordSection.ACCESS_LOG,), (), answer)
    # Appends since the check (this read's own among them) may add a few: twice the bound
    # leaves room for them; only a burst of more than the bound in between is refused.
    own = await _own_accesses_after(deps, case_id, after, 2 * OWN_UNINDEXED)
    page = await deps.timelines.page(case_id, ACCESS_LOG, cursor, page_size, own)
    return AccessLogPage(page.entries, cursor_after(page))


_OWN_ACCESSES = "audit's timeline of its own access records"


async def _own_accesses_after(
    deps: AuditDeps, case_id: str, after: int, limit: int
) -> list[RecordedEvent]:
    """The case's access records in audit's own store after ``after`` (the position the
    timeline has taken in), reading at most ``limit`` events, a batch at a time (only the
    case's accesses are kept). Those of a list's one append (``access-batch-…`` streams)
    count too: the subject is the case. More than ``limit`` to read is ``NotCaughtUp``."""
    types = ACCESS_LOG.event_types
    found: list[RecordedEvent] = []
    read = 0
    while batch := await deps.store.read_all(after, limit=min(_OWN_BATCH, limit + 1 - read)):
        read += len(batch)
        if read > limit:
            raise NotCaughtUp(_OWN_ACCESSES, case_id)
        found.extend(r for r in batch if r.subject == case_id and r.event_type in types)
        after = batch[-1].position
    return found


LEDGER_SUBJECT = "ledger"
"""Where a refused ledger query is recorded: the ledger is about whole logs, not one case."""


async def authorize_ledger(
    deps: AuditDeps,
    viewer: QueryContext,
    principal: Principal | None = None,
    answer: Answer | None = None,
) -> None:
    """The policy's decision on a ledger query (``Action.READ_LEDGER``). The answers are
    hashes, sizes and signatures of whole logs, never case content, so an allowed query is
    not recorded as an access (only its rule named to the caller); a refusal is
    (``record.access_denied`` under ``LEDGER_SUBJECT``), then raised."""
    who = _who(deps, viewer, principal)
    decision = deps.access.decide(who, Action.READ_LEDGER, viewer.purpose, None)
    if not decision.allowed:
        await deps.access.refuse(who, Action.READ_LEDGER, viewer.purpose, LEDGER_SUBJECT, decision)
    # No section disclosed: nothing is recorded, the rule is named.
    await deps.access.release(
        answer, who, viewer.purpose, [Disclosure(LEDGER_SUBJECT, decision, None, (), ())]
    )


CASES_OF_CLIENT = 1000
# The subject a refused FindCasesOfClient is recorded under when no case of the client is known.
CLIENT_INDEX_SUBJECT = "client-index"
"""Cases ``find_cases_of_client`` lists at most (the first in id order): the answer stays far
below gRPC's 4 MB, and only what it lists is recorded as read."""


@dataclass(frozen=True)
class CasesOfClient:
    case_ids: list[str]
    truncated: bool
    """The viewer may read more of the client's cases than ``case_ids`` lists."""


async def find_cases_of_client(
    deps: AuditDeps,
    viewer: QueryContext,
    client_cases: Sequence[str],
    principal: Principal | None = None,
    answer: Answer | None = None,
    *,
    client_id: str,
) -> CasesOfClient:
    """Which of a client's cases (``client_cases``, from audit's client index, in id order) the
    viewer may read, the first ``CASES_OF_CLIENT`` of them, each recorded as an access (section
    identity: the answer tells that the client has the case) before it is answered. A case the
    policy refuses is left out, its refusal recorded; a role that may read no trail is
    refused. Facts not caught up name ``client_id``, never one of its cases."""
    who = _who(deps, viewer, principal)
    if not any_rule_for(who.role, Action.READ_TRAIL):
        # Recorded under each case, or under the index when the client has none (or this
        # server keeps no index): a refusal is on the record whatever the client holds.
        decision = deps.access.decide(who, Action.READ_TRAIL, viewer.purpose, None)
        refused_for = list(client_cases) or [CLIENT_INDEX_SUBJECT]
        await deps.access.refuse_cases(
            who, Action.READ_TRAIL, viewer.purpose, refused_for, decision
        )
    shown: list[Disclosure] = []
    truncated = False
    # A case the index knows and the timeline does not hold yet is left out, as the accounting
    # of disclosures leaves it (``received_facts``): it is not known here yet, and a NOT_FOUND
    # would name it to a caller who asked about the client.
    received = await received_facts(
        deps, who, Action.READ_TRAIL, viewer.purpose, client_cases, subject=client_id
    )
    for case_id, entries in received.items():
        try:
            allowed = await _decided(deps, viewer, who, Action.READ_TRAIL, case_id, entries)
        except AccessDenied:
            continue
        if len(shown) == CASES_OF_CLIENT:
            truncated = True
            break
        shown.append(Disclosure(case_id, allowed.decision, None, (), (RecordSection.IDENTITY,)))
    if shown:
        await deps.access.release(answer, who, viewer.purpose, shown)
    return CasesOfClient([item.case_id for item in shown], truncated)


async def _caller(
    deps: AuditDeps,
    viewer: QueryContext,
    principal: Principal | None,
    action: Action,
    case_id: str,
) -> Principal:
    """Who asks; a role that may never do ``action`` is refused before the case is looked up."""
    who = _who(deps, viewer, principal)
    await deps.access.require_role(who, action, viewer.purpose, case_id)
    return who


def _who(deps: AuditDeps, viewer: QueryContext, principal: Principal | None) -> Principal:
    # Without a principal (an in-process caller, e.g. a test), the viewer is staff of the home
    # agency with no team and no entitlements: the narrowest reading of who they are.
    return principal or Principal(
        viewer.actor.user_id, viewer.actor.role, deps.access.home_agency, "in-process"
    )


async def authorize_case(
    deps: AuditDeps, viewer: QueryContext, who: Principal, action: Action, case_id: str
) -> tuple[Principal, Disclosure]:
    """The policy's decision on the case, its facts folded from the fact entries the timeline
    keeps of the case's whole history (audit holds every event); a refusal is recorded and
    raised. A caller whose right an event can end (a team's supervisor reading its cases'
    trails) first waits for the timeline to hold the case's facts on the bus
    (``AccessControl.wait_for_facts``).

    A case audit has no event of is decided on the facts of a case with none (no worker, team,
    referral, consent or emergency access), and only then told ``CaseNotFound``: a caller the
    policy refuses gets the same recorded refusal for an unknown id as for a real case it may
    not read, as intake's, planning's and coordination's reads do, and only one the policy
    would let read the case learns that audit holds none of it."""
    received = await received_facts(deps, who, action, viewer.purpose, [case_id], subject=case_id)
    entries = received.get(case_id)
    allowed = await _decided(deps, viewer, who, action, case_id, entries or ())
    if entries is None:
        raise CaseNotFound(case_id)
    return who, allowed


async def received_facts(
    deps: AuditDeps,
    who: Principal,
    action: Action,
    purpose: AccessPurpose,
    case_ids: Sequence[str],
    *,
    subject: str,
) -> dict[str, list[Entry]]:
    """The fact entries of each of ``case_ids`` audit's timeline holds events of, by case id in
    the order given; for a caller whose right an event can end, once the timeline holds what
    the bus has of the case (``AccessControl.wait_for_facts``). A case it holds none of is
    left out: a client's cases come from audit's client index, which a consumer group of its
    own feeds, so the index may know a case whose events have not reached the timeline yet.
    Such a case is not known here yet: neither decided nor named, in an answer or an error.
    Facts not caught up name ``subject``, what the request asked about (the client, or the
    case itself), never a case looked up for it."""
    # The waits side by side (one at a time, a client's ten cases could wait ten times 5 s).
    await deps.access.wait_for_facts(who, action, purpose, case_ids, subject=subject)
    received: dict[str, list[Entry]] = {}
    for case_id in case_ids:
        if (entries := await deps.timelines.facts_of(case_id)) is not None:
            received[case_id] = entries
    return received


async def _decided(
    deps: AuditDeps,
    viewer: QueryContext,
    who: Principal,
    action: Action,
    case_id: str,
    entries: Sequence[Entry],
) -> Disclosure:
    """The policy's decision on the case whose fact entries are ``entries``; a refusal is
    recorded and raised."""
    facts = await deps.access.case_facts(case_id, entries)
    decision = await deps.access.authorize(who, action, viewer.purpose, facts)
    return Disclosure(case_id, decision, None, (), ())


async def _release(
    deps: AuditDeps,
    viewer: QueryContext,
    allowed: tuple[Principal, Disclosure],
    case_id: str,
    shown: Sequence[RecordedEvent],
    asked: TimelineQuery,
    *,
    answer: Answer | None,
    others: NamedOthers | None = None,
) -> list[RecordedEvent]:
    """Record what is about to be shown of the view ``asked``: its sections and the sensitive
    fields it holds. A page that shows nothing still tells of the case (no event of the types
    asked in its range, none by the actor asked; a timeline's ``total`` beside it), so it is
    recorded under the sections the view is about (``sections_asked``), not left unrecorded
    as a page naming no section would be (``AccessControl.release`` records no item without
    one): an auditor asking who learnt that a client had no contact in March filters the
    access log on ``contacts``, where a record under ``access_log`` alone would hide it."""
    events = [recorded.event for recorded in shown]
    chosen = sections_disclosed(events) if events else sections_asked(asked)
    fields = sensitive_fields_shown(events)
    return await _record(deps, viewer, allowed, case_id, chosen, fields, answer, others)


async def _record(
    deps: AuditDeps,
    viewer: QueryContext,
    allowed: tuple[Principal, Disclosure],
    case_id: str,
    sections: Sequence[RecordSection],
    fields: Sequence[str],
    answer: Answer | None,
    others: NamedOthers | None = None,
) -> list[RecordedEvent]:
    """Record the view of ``case_id`` and, with it, what it shows of the other cases and
    clients its client's events name (``others``: each one shown, the fields of those withheld
    listed)."""
    principal, disclosure = allowed
    withheld = () if others is None else others.withheld_paths
    item = Disclosure(
        case_id, disclosure.decision, None, (), sections, fields, withheld_fields=withheld
    )
    shown = [] if others is None else list(others.shown)
    return await deps.access.release(answer, principal, viewer.purpose, [item, *shown])
