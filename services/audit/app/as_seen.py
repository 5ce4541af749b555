"""A case "as user U saw it at time T" (``AuditService.GetCaseAsSeen``).

Recorded-at decides throughout: the state is folded from the events recorded up to T, the
policy's facts (assignment, referrals, consents, emergency accesses) are folded from the same
events, and U's reads are U's ``record.accessed`` events recorded up to T. U's entitlement is
``decide()`` for reading the case, with U's role, agency, team and purpose as they stood at T:
taken from the request, else from U's latest recorded access to the case up to T (role,
agency, purpose), the emergency access U opened (team, as the token named it) or U's assignment
at T (team), the home agency, and for the purpose the first one the policy allows U (catalog
order). The matrix applied is today's; the policy version on
U's recorded reads tells whether it was another.

Only auditors may ask (rule ``auditor-review``, purpose confidentiality_review); the answer is
itself recorded as an access to the sections shown and the access log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from google.protobuf.message import Message

from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy import facts as policy_facts
from casetrail_platform.policy import redaction
from casetrail_platform.policy.decide import decide
from casetrail_platform.policy.guard import Answer
from casetrail_platform.policy.guard import Disclosure as Released
from casetrail_platform.policy.vocabulary import Action, Decision
from casetrail_platform.queries import QueryContext
from events.catalog.access import (
    AccessPurpose,
    RecordAccessDenied,
    RecordAccessed,
    RecordSection,
)
from events.catalog.base import Role
from events.catalog.emergency import EmergencyAccessOpened
from events.envelope import RecordedEvent
from services.audit.app.queries import (
    EXPORT_PAGE,
    AuditDeps,
    CaseTimelines,
    authorize_case,
    case_pages,
)
from services.audit.domain.access import STATE_SECTIONS
from services.audit.domain.case_state import CaseFold, CaseState, fold
from services.audit.domain.errors import CaseNotFound, invalid
from services.audit.domain.history import TimeBasis, TimelineQuery

ACTION = Action.REVIEW_AS_SEEN
READS_PAGE = 1000
"""Index entries read per round trip when listing what U read."""
READS_SHOWN = 1000
"""U's reads the answer lists at most, the latest: a case read daily for years holds thousands
(about 250 bytes each, more with field paths), past gRPC's 4 MB answer; the access log pages
through all of them."""
USER_ACTION = Action.READ_CASE
"""What U's entitlement is decided for: reading the case."""


@dataclass(frozen=True)
class UserClaims:
    """What the request says of U at T; ``None``: learn it from the record."""

    user_id: str
    role: Role | None = None
    agency: str | None = None
    team: str | None = None
    purpose: AccessPurpose | None = None


@dataclass(frozen=True)
class UserAtTime:
    principal: Principal
    purpose: AccessPurpose
    derived_from: Mapping[str, str]
    """role, agency, team, purpose -> request | access_event | assignment | home_agency |
    policy | none."""


@dataclass(frozen=True)
class StateRendering:
    """How the entrypoint shows a case state, and where its sections and sensitive fields sit
    in that message (so U's entitlement can clear what U could not see)."""

    render: Callable[[CaseState, bool], Message]
    """The state as shown to U, and whether U is shown sensitive values (which numbers the
    plan's versions as planning showed them to U)."""
    section_paths: Mapping[RecordSection, Sequence[str]]
    sensitive_paths: Sequence[str]
    field_prefix: str
    """How the answer names the state's field paths in the access record, e.g. ``state``."""
    referral_paths: Mapping[str, str]
    """Lists whose entries belong to a referral, with the field naming it: a partner's
    entitlement is bounded by the referrals its agency accepted."""
    revealing_paths: Mapping[str, Sequence[RecordSection]] = field(default_factory=dict)
    """Fields of no section of their own that tell of sections (a status saying the case is
    assigned, planned, closed): cleared unless every one of those sections is disclosed."""
    activity_paths: Sequence[str] = ()
    """Fields that tell of the whole history (how many events, when the last): cleared when
    any part of the state is withheld."""
    special_links: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Fields naming an entry of one of the state's lists (``services.referral_id``), each with
    where that list's category or kind sits and the entry's id field (``referrals.need_category``,
    ``referral_id``): U not entitled to special-data values is shown no field naming an entry
    withheld whole as one (``redaction.unlink``), whose id the state would list nowhere else."""
    special_lists: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Lists of ids naming entries of the state's lists (``plan.agreed_goal_ids``), each with
    where those entries' category or kind sits and their id field (``plan.goals.need_category``,
    ``goal_id``): U not entitled to special-data values is shown none of an entry withheld whole
    (``redaction.unlist``), as ``special_links``."""
    bound_lists: Callable[[Message], None] = lambda _: None
    """Cuts the lists that grow with the case to what one answer can carry, once what U could
    not see is cleared (counting only what U could see)."""


@dataclass(frozen=True)
class AsSeen:
    state: Message
    user: UserAtTime
    entitlement: Decision
    withheld_sections: list[str]
    withheld_fields: list[str]
    reads: list[RecordedEvent]
    """U's latest reads up to T (at most ``READS_SHOWN``), oldest first."""
    reads_total: int


@dataclass
class _Attempts:
    """U's recorded attempts on the case up to T as one agency's staff, kept within a bound
    however many there are."""

    latest: RecordAccessed | RecordAccessDenied | None = None
    reads: deque[RecordedEvent] = field(default_factory=lambda: deque(maxlen=READS_SHOWN))
    reads_total: int = 0


async def case_as_seen(
    deps: AuditDeps,
    viewer: QueryContext,
    case_id: str,
    claims: UserClaims,
    as_of: datetime,
    rendering: StateRendering,
    principal: Principal | None = None,
    answer: Answer | None = None,
) -> AsSeen:
    reviewer, allowed = await _reviewed(deps, viewer, case_id, principal)
    # Every pass reads one snapshot: the facts U's entitlement is decided on, U's attempts and
    # the state shown are of one commit. Read from a snapshot each, an event delivered between
    # them (a reassignment recorded before T, late on the bus) was missing from the facts and
    # in the state: U entitled as the case's worker beside a state naming another worker.
    async with deps.timelines.snapshot() as timelines:
        known = await _known(timelines, case_id, claims.user_id, as_of)
        if not known.events:
            # Tells when the case began: released (recorded, or refused) like any answer.
            await _release(deps, answer, reviewer, viewer, case_id, allowed, [], [])
            raise invalid("as_of", "is before the case's first recorded event")
        facts = policy_facts.fold(case_id, known.entries, as_of=as_of)
        home = deps.access.home_agency
        by_agency = await _attempts_of(timelines, case_id, claims.user_id, home, as_of)
        # U is a subject of one agency: another agency's staff of the same name are someone
        # else, whose attempts and emergency accesses are not U's. Without an agency in the
        # request, U's is the agency of U's latest attempt, else the home agency.
        agency = claims.agency or next(reversed(by_agency), home)
        attempts = by_agency.get(agency, _Attempts())
        if claims.role is None and attempts.latest is None:
            # Tells that the user had not read the case by then: released before it is said.
            await _release(deps, answer, reviewer, viewer, case_id, allowed, [], [])
        opened = known.opened.get(agency)
        user, entitlement = _entitlement(claims, opened, attempts.latest, facts, home, as_of)
        state = await _state(timelines, case_id, as_of) if entitlement.allowed else None
    message = rendering.render(
        state or fold(case_id, [], TimeBasis.RECORDED), entitlement.sensitive
    )
    withheld_sections: list[str] = []
    withheld_fields: list[str] = []
    # Taken before anything is withheld: the entries of special data go whole.
    special = _special_ids(message, rendering.special_links)
    special_lists = _special_ids(message, rendering.special_lists)
    if state is not None and entitlement.referral_ids is not None:
        redaction.keep_referred(message, rendering.referral_paths, entitlement.referral_ids)
    if state is not None:
        for section, paths in rendering.section_paths.items():
            if not entitlement.discloses(section):
                redaction.withhold(message, paths)
                withheld_sections.append(section.value)
        # Listed whatever they held: listed only when set, they would tell what was there.
        for path, revealed in rendering.revealing_paths.items():
            if not all(entitlement.discloses(section) for section in revealed):
                redaction.withhold(message, [path])
                withheld_fields.append(path)
        # Decided on the entitlement, not on what was there: the count and the last event's
        # time take in the events of what is withheld, a special-data service's too.
        if withheld_sections or entitlement.referral_ids is not None or not entitlement.sensitive:
            redaction.withhold(message, rendering.activity_paths)
            withheld_fields.extend(rendering.activity_paths)
        if not entitlement.sensitive:
            withheld_fields += redaction.redact(message, rendering.sensitive_paths)
            withheld_fields += redaction.unlink(message, special)
            withheld_fields += redaction.unlist(message, special_lists)
    rendering.bound_lists(message)
    shown = [
        f"{rendering.field_prefix}.{path}"
        for path in redaction.present(message, rendering.sensitive_paths)
    ]
    sections = [s for s in STATE_SECTIONS if state is not None and entitlement.discloses(s)]
    await _release(deps, answer, reviewer, viewer, case_id, allowed, sections, shown)
    return AsSeen(
        message,
        user,
        entitlement,
        withheld_sections,
        withheld_fields,
        list(attempts.reads),
        attempts.reads_total,
    )


def _special_ids(
    message: Message, links: Mapping[str, tuple[str, str]]
) -> dict[str, frozenset[str]]:
    """For each field of ``links``, the ids of the entries it may name that are withheld whole
    as special data (``redaction.special_ids``), taken before anything is withheld."""
    return {
        path: redaction.special_ids(message, entries, id_field)
        for path, (entries, id_field) in links.items()
    }


async def _release(
    deps: AuditDeps,
    answer: Answer | None,
    reviewer: Principal,
    viewer: QueryContext,
    case_id: str,
    allowed: Decision,
    sections: Sequence[RecordSection],
    shown: Sequence[str],
) -> None:
    """Record the review as a read of the case's access log (and ``sections``, ``shown``), or
    record and raise its refusal: before anything about the case is answered, refusals
    included."""
    released = Released(
        case_id, allowed, None, (), (*sections, RecordSection.ACCESS_LOG), list(shown)
    )
    await deps.access.release(answer, reviewer, viewer.purpose, [released])


async def _reviewed(
    deps: AuditDeps, viewer: QueryContext, case_id: str, principal: Principal | None
) -> tuple[Principal, Decision]:
    """The reviewer and the policy's decision to let them review the case (a refusal is
    recorded and raised; a role that may never review learns nothing, not even whether the
    case exists). ``CaseNotFound`` when audit has none of the case's own events, told only to
    a reviewer the policy lets review it (``authorize_case``): another agency's auditor is
    refused alike for an unknown id and a real case."""
    access = deps.access
    reviewer = principal or Principal(
        viewer.actor.user_id, viewer.actor.role, access.home_agency, "in-process"
    )
    await access.require_role(reviewer, ACTION, viewer.purpose, case_id)
    _, allowed = await authorize_case(deps, viewer, reviewer, ACTION, case_id)
    # Known by its access records alone (refusals recorded under an id never used): no case.
    if not await deps.timelines.count(case_id, _OWN):
        raise CaseNotFound(case_id)
    return reviewer, allowed.decision


_OWN = TimelineQuery(TimeBasis.RECORDED, without_accesses=True)
"""The case's own events (and its client's) on the recorded clock: its access records change
nothing in a state (a case read for years holds tens of thousands; U's are read apart,
``_attempts_of``)."""


@dataclass(frozen=True)
class _Known:
    """What the case's own events recorded up to T tell of the review, read a page at a time
    (a case worked for years holds 100,000: they were read and decoded whole)."""

    events: int
    entries: list[policy_facts.Entry]
    """The policy's fact entries of the case's events."""
    opened: dict[str, EmergencyAccessOpened]
    """The latest emergency access U opened, by the agency U opened it as."""


def _of_case(page: Sequence[RecordedEvent]) -> list[RecordedEvent]:
    """The case's own events of a page (its client's come beside them: not the case's)."""
    return [recorded for recorded in page if recorded.event.subject_field == "case_id"]


async def _known(timelines: CaseTimelines, case_id: str, user_id: str, as_of: datetime) -> _Known:
    events = 0
    entries: list[policy_facts.Entry] = []
    opened: dict[str, EmergencyAccessOpened] = {}
    query = replace(_OWN, as_of=as_of)
    async for page in case_pages(timelines, case_id, query, EXPORT_PAGE):
        for recorded in _of_case(page):
            events += 1
            if (entry := policy_facts.entry_of(recorded)) is not None:
                entries.append(entry)
            event = recorded.event
            if isinstance(event, EmergencyAccessOpened) and event.grantee_id == user_id:
                opened[event.grantee_agency_id] = event
    return _Known(events, entries, opened)


async def _state(timelines: CaseTimelines, case_id: str, as_of: datetime) -> CaseState:
    """The case as recorded up to ``as_of``, folded a page at a time."""
    folding = CaseFold(case_id, TimeBasis.RECORDED)
    async for page in case_pages(timelines, case_id, replace(_OWN, as_of=as_of), EXPORT_PAGE):
        for recorded in _of_case(page):
            folding.apply(recorded)
    return folding.state()


async def _attempts_of(
    timelines: CaseTimelines, case_id: str, user_id: str, home_agency: str, as_of: datetime
) -> dict[str, _Attempts]:
    """``user_id``'s latest attempt on the case (read or refused) and latest reads as recorded
    up to ``as_of``, by the agency they were made as (an access recorded with none: the home
    agency's), the agency of the latest attempt last; from the timeline's index (filtered
    there on the recorder, who is the reader: ``AccessControl`` records with its principal as
    the actor)."""
    query = TimelineQuery(
        TimeBasis.RECORDED,
        as_of=as_of,
        event_types=frozenset({RecordAccessed.event_type, RecordAccessDenied.event_type}),
        actor_id=user_id,
    )
    by_agency: dict[str, _Attempts] = {}
    async for page in case_pages(timelines, case_id, query, READS_PAGE):
        for recorded in page:
            _count_attempt(by_agency, recorded, user_id, home_agency)
    return by_agency


def _count_attempt(
    by_agency: dict[str, _Attempts], recorded: RecordedEvent, user_id: str, home_agency: str
) -> None:
    """``recorded``, when it is an attempt of ``user_id``'s, counted under its agency."""
    event = recorded.event
    if not isinstance(event, RecordAccessed | RecordAccessDenied) or event.accessor_id != user_id:
        return
    agency = event.accessor_agency_id or home_agency
    attempts = by_agency.pop(agency, None) or _Attempts()
    by_agency[agency] = attempts  # last: the agency of the latest attempt
    attempts.latest = event
    if isinstance(event, RecordAccessed):
        attempts.reads.append(recorded)
        attempts.reads_total += 1


def _entitlement(
    claims: UserClaims,
    opened: EmergencyAccessOpened | None,
    latest: RecordAccessed | RecordAccessDenied | None,
    facts: policy_facts.CaseFacts,
    home_agency: str,
    as_of: datetime,
) -> tuple[UserAtTime, Decision]:
    """``opened``: the latest emergency access U opened recorded up to ``as_of``; ``latest``:
    U's latest read or refused attempt recorded up to then."""
    source: dict[str, str] = {}
    role = claims.role
    source["role"] = "request"
    if role is None and latest is not None:
        role, source["role"] = latest.accessor_role, "access_event"
    if role is None:
        raise invalid(
            "user_role",
            "required: the user has no access to the case recorded up to as_of to read it from",
        )
    agency = claims.agency
    source["agency"] = "request"
    if agency is None and latest is not None and latest.accessor_agency_id is not None:
        agency, source["agency"] = latest.accessor_agency_id, "access_event"
    if agency is None:
        agency, source["agency"] = home_agency, "home_agency"
    team = claims.team
    source["team"] = "request"
    # The token's team was recorded when U broke the glass; else U's team is the assignment's.
    if team is None and opened is not None and opened.grantee_team is not None:
        team, source["team"] = opened.grantee_team, "emergency_access"
    if team is None:
        assigned = facts.worker_id == claims.user_id and facts.worker_team is not None
        team = facts.worker_team if assigned else None
        source["team"] = "assignment" if assigned else "none"
    principal = Principal(claims.user_id, role, agency, "as-recorded", team=team)

    def decided(purpose: AccessPurpose) -> Decision:
        return decide(principal, USER_ACTION, purpose, facts, home_agency=home_agency, now=as_of)

    purpose = claims.purpose
    source["purpose"] = "request"
    if purpose is None and latest is not None:
        purpose, source["purpose"] = latest.purpose, "access_event"
    if purpose is None:
        # The purposes U could have stated, in catalog order: the first the policy allows.
        source["purpose"] = "policy"
        purpose = next((p for p in AccessPurpose if decided(p).allowed), AccessPurpose.DIRECT_CARE)
    return UserAtTime(principal, purpose, source), decided(purpose)
