"""Break the glass at intake: open an emergency access, list the review queue, record a review,
close one early.

An emergency access goes to the case's stream like a consent; intake's own next read honours
it (and its closing) at once, the other services as soon as the event reaches their policy
facts over the bus. Opening is refused unless the access policy lets the caller break the glass
(``decide_emergency_opening``). Every refusal of these commands and of the queue is recorded
(``record.access_denied``) before it is answered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from casetrail_platform.commands import CommandContext, InvalidCommand, derived_id
from casetrail_platform.decide import Published, execute, once_published
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import decide_emergency_opening, may_rest_on_ended, refusal
from casetrail_platform.policy.facts import CaseFacts
from casetrail_platform.policy.guard import AccessControl, AccessDenied
from casetrail_platform.policy.vocabulary import BREAK_GLASS_ENTITLEMENT, Action, Decision
from casetrail_platform.store.port import EventStore
from events.catalog.access import AccessPurpose, RecordSection
from events.catalog.base import CaseEvent
from events.catalog.emergency import (
    EmergencyAccessClosed,
    EmergencyAccessOpened,
    EmergencyAccessReviewed,
)
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.emergency_accesses import EmergencyAccessEntry, EmergencyAccessQueue
from services.intake.app.commands import (
    CloseEmergencyAccess,
    ListEmergencyAccesses,
    OpenEmergencyAccess,
    ReviewEmergencyAccess,
)
from services.intake.app.handlers import (
    SOURCE,
    Recorded,
    case_client_erasure,
    closure_moments,
    recorded_of,
    unsealable_after_erasure,
)
from services.intake.app.validation import build
from services.intake.domain.cases import case_stream
from services.intake.domain.emergency import (
    DEFAULT_EMERGENCY_ACCESS,
    GRANTEE_SUPERVISOR_RULE,
    OVERSIGHT_PURPOSE,
    SELF_REVIEW_REASON,
    SELF_REVIEW_RULE,
    NotTheGrantee,
    SelfReview,
    decide_close,
    decide_opening,
    decide_review,
    opened_access,
    reviewer_refusal,
    supervises_grantee,
    time_box,
)

QUEUE_PAGE = 100
"""Accesses listed at most by one ``ListEmergencyAccesses``."""
REVIEW_QUEUE = "emergency-access-queue"
"""Where a refused listing of the whole queue is recorded: it names no case."""
GRANTEE_SUPERVISION = Decision(
    True, GRANTEE_SUPERVISOR_RULE, sections=frozenset({RecordSection.ACCESS_LOG}), sensitive=True
)
"""What the grantee's supervisor sees of a case no team carries: its emergency accesses (their
reasons and reviews), nothing else of the case."""


@dataclass(frozen=True, slots=True)
class Opened:
    recorded: Recorded
    access: EmergencyAccessOpened
    """The access recorded (the first attempt's, on a retry)."""


@dataclass(frozen=True, slots=True)
class Closed:
    recorded: Recorded
    closing: EmergencyAccessClosed
    """The closing recorded (the first attempt's, on a retry)."""


@dataclass(frozen=True, slots=True)
class QueueItem:
    entry: EmergencyAccessEntry
    review_due_at: datetime
    overdue: bool
    decision: Decision
    """The policy's decision that lets the caller see this case's accesses."""


def opening_of(
    context: CommandContext, principal: Principal, command: OpenEmergencyAccess, now: datetime
) -> EmergencyAccessOpened:
    """The access ``command`` asks for, checked (reason, duration, case id), without I/O."""
    problems: list[FieldProblem] = []
    try:
        length = time_box(command.duration)
    except InvalidCommand as error:
        problems.extend(error.violations)
        length = DEFAULT_EMERGENCY_ACCESS
    try:
        opened = build(
            EmergencyAccessOpened,
            {
                "case_id": command.case_id,
                "emergency_access_id": derived_id(context, SOURCE, "emergency-access"),
                "grantee_id": principal.subject,
                "grantee_role": principal.role,
                "grantee_agency_id": principal.agency,
                "grantee_team": principal.team,
                "entitlement": BREAK_GLASS_ENTITLEMENT,
                "reason": command.reason,
                "opened_at": now,
                "expires_at": now + length,
            },
        )
    except InvalidCommand as error:
        problems.extend(error.violations)
    if problems:
        raise InvalidCommand(problems)
    return opened


async def open_emergency_access(
    store: EventStore,
    closures: ClosureLog,
    access: AccessControl,
    context: CommandContext,
    principal: Principal,
    command: OpenEmergencyAccess,
    now: datetime,
    published: Published,
) -> Opened:
    """Answered once the bus has the opening (``once_published``): the grantee's reads in
    every service wait for their facts to hold what the bus has, so the first read after the
    answer is decided with the access, in an emergency not refused while it travels."""
    opened = opening_of(context, principal, command, now)
    decision = decide_emergency_opening(principal, home_agency=access.home_agency)
    if not decision.allowed:
        await access.refuse(
            principal, Action.BREAK_GLASS, AccessPurpose.EMERGENCY, opened.case_id, decision
        )
    erasure = await case_client_erasure(store, opened.case_id)
    closed = await closure_moments(closures, opened.case_id)
    recorded = await execute(
        store,
        SOURCE,
        context,
        case_stream(opened.case_id),
        lambda history: decide_opening(
            history, opened, erasure.erased, occurred_at=context.moment(), closures=closed
        ),
        guard=erasure.read,
    )
    await once_published(published, recorded, "emergency access's opening")
    first = recorded[0].event if recorded else opened
    assert isinstance(first, EmergencyAccessOpened)
    return Opened(recorded_of(opened.case_id, recorded), first)


def review_of(context: CommandContext, command: ReviewEmergencyAccess) -> EmergencyAccessReviewed:
    return build(
        EmergencyAccessReviewed,
        {
            "case_id": command.case_id,
            "emergency_access_id": command.emergency_access_id,
            "reviewer_id": context.actor.user_id,
            "reviewer_role": context.actor.role,
            "outcome": command.outcome,
            "note": command.note,
        },
    )


async def review_emergency_access(
    store: EventStore,
    closures: ClosureLog,
    access: AccessControl,
    context: CommandContext,
    principal: Principal,
    command: ReviewEmergencyAccess,
) -> Recorded:
    """A supervisor of the case's team or an auditor reviews (their oversight of the case's
    trail, as the access policy decides it); never the grantee. A refusal is recorded."""
    review = review_of(context, command)
    purpose = _oversight(principal)
    action = Action.REVIEW_EMERGENCY_ACCESS
    oversee = await _oversight_rule(access, principal, purpose, review.case_id)
    closed = await closure_moments(closures, review.case_id)

    def decide(history: list[RecordedEvent]) -> list[CaseEvent]:
        decision = oversee(opened_access(history, review.emergency_access_id))
        if not decision.allowed:
            raise _NotOverseen(decision)
        return decide_review(history, review, occurred_at=context.moment(), closures=closed)

    try:
        # The duty to review outlives the client's erasure; only the note cannot be sealed.
        with unsealable_after_erasure("note", review.note is not None):
            recorded = await execute(store, SOURCE, context, case_stream(review.case_id), decide)
    except _NotOverseen as refused:
        await access.refuse(principal, action, purpose, review.case_id, refused.decision)
    except SelfReview:
        # Found on the case's history: recorded like the policy's refusals.
        own = Decision(False, SELF_REVIEW_RULE, reason=SELF_REVIEW_REASON)
        await access.refuse(principal, action, purpose, review.case_id, own)
    return recorded_of(review.case_id, recorded)


def closing_of(
    context: CommandContext, principal: Principal, command: CloseEmergencyAccess, now: datetime
) -> EmergencyAccessClosed:
    return build(
        EmergencyAccessClosed,
        {
            "case_id": command.case_id,
            "emergency_access_id": command.emergency_access_id,
            "closed_by_id": principal.subject,
            "closed_by_role": principal.role,
            "closed_at": now,
        },
    )


async def close_emergency_access(
    store: EventStore,
    closures: ClosureLog,
    access: AccessControl,
    context: CommandContext,
    principal: Principal,
    command: CloseEmergencyAccess,
    now: datetime,
    published: Published,
) -> Closed:
    """The grantee, or whoever may review the access, ends it before its time box; from then
    nothing more is read under it (answered once the bus has the closing, ``once_published``:
    the grantee's reads in every service wait for their facts to hold it). Anyone else is
    refused, and recorded, under the oversight decision that did not let them (they learn
    nothing of the access)."""
    closing = closing_of(context, principal, command, now)
    purpose = _oversight(principal)
    oversee = await _oversight_rule(access, principal, purpose, closing.case_id)
    closed = await closure_moments(closures, closing.case_id)

    def decide(history: list[RecordedEvent]) -> list[CaseEvent]:
        oversight = oversee(opened_access(history, closing.emergency_access_id))
        try:
            return decide_close(
                history,
                closing,
                closer=principal,
                may_oversee=oversight.allowed,
                occurred_at=context.moment(),
                closures=closed,
            )
        except NotTheGrantee:
            raise _NotOverseen(oversight) from None

    try:
        recorded = await execute(store, SOURCE, context, case_stream(closing.case_id), decide)
    except _NotOverseen as refused:
        action = Action.CLOSE_EMERGENCY_ACCESS
        await access.refuse(principal, action, purpose, closing.case_id, refused.decision)
    await once_published(published, recorded, "emergency access's closing")
    first = recorded[0].event if recorded else closing
    assert isinstance(first, EmergencyAccessClosed)
    return Closed(recorded_of(closing.case_id, recorded), first)


async def review_queue(
    queue: EmergencyAccessQueue,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    query: ListEmergencyAccesses,
    now: datetime,
    review_within: timedelta,
) -> tuple[list[QueueItem], bool]:
    """The accesses the caller oversees, overdue first then oldest first, and whether more
    than ``QUEUE_PAGE`` matched (or more than the queue's scan reads, those awaiting review
    read first). Cases the caller does not oversee are left out (the case asked for, if any,
    with its refusal recorded); a caller who may not see the queue at all (another agency's,
    ``require_agency_reader``, or a role or purpose not a reviewer's) is refused, recorded
    under the case asked for or else under ``REVIEW_QUEUE``."""
    asked = query.case_id or REVIEW_QUEUE
    await access.require_agency_reader(principal, Action.REVIEW_EMERGENCY_ACCESS, purpose, asked)
    refusal = reviewer_refusal(principal.role, purpose)
    if refusal is not None:
        await access.refuse(
            principal,
            Action.REVIEW_EMERGENCY_ACCESS,
            purpose,
            asked,
            _refused(refusal, purpose),
        )
    items: list[QueueItem] = []
    withheld: Decision | None = None
    entries, cut_short = await queue.entries(
        include_reviewed=query.include_reviewed, case_id=query.case_id
    )
    # One read for the facts of every case scanned (up to the queue's scan, 10,000), not one
    # round trip per case.
    facts = await access.cases_facts([entry.case_id for entry in entries])

    def decided(entry: EmergencyAccessEntry) -> Decision:
        return _or_grantee_supervision(
            access.decide(principal, Action.READ_TRAIL, purpose, facts[entry.case_id]),
            access,
            principal,
            purpose,
            facts[entry.case_id],
            entry,
        )

    # A supervisor's right rests on the case's team, which a transfer ends: the cases the facts
    # as they stand show are decided again on facts holding the cases' facts on the bus
    # (``reader_facts_of``). Only those: a wait for every case scanned would be as many
    # questions to the bus, and a case the facts refuse is not shown either way.
    decisions = [decided(entry) for entry in entries]
    waits = may_rest_on_ended(principal.role, Action.READ_TRAIL, purpose)
    shown = {e.case_id for e, decision in zip(entries, decisions, strict=True) if decision.allowed}
    if waits and shown:
        # Facts not caught up name what was asked for, never a case scanned: none is decided.
        facts |= await access.reader_facts_of(
            principal,
            Action.READ_TRAIL,
            purpose,
            list(shown),
            subject=query.case_id or REVIEW_QUEUE,
        )
        decisions = [
            decided(e) if e.case_id in shown else decision
            for e, decision in zip(entries, decisions, strict=True)
        ]
    for entry, decision in zip(entries, decisions, strict=True):
        if not decision.allowed:
            withheld = decision
            continue
        due = entry.opened_at + review_within
        items.append(QueueItem(entry, due, entry.review is None and now >= due, decision))
    if withheld is not None and query.case_id is not None:
        # The caller asked for this case's accesses and may not see them: answered as if there
        # were none (a withheld access looks like no access), but on the record, as a withheld
        # duplicate candidate is. A whole-queue listing names no case: other teams' cases are
        # left out without a record, nobody asked for them.
        with contextlib.suppress(AccessDenied):
            await access.refuse(
                principal, Action.REVIEW_EMERGENCY_ACCESS, purpose, query.case_id, withheld
            )
    items.sort(key=lambda item: (not item.overdue, item.entry.opened_at))
    return items[:QUEUE_PAGE], cut_short or len(items) > QUEUE_PAGE


class _Grantee(Protocol):
    """Who was granted an emergency access (its opening, or its entry in the queue)."""

    @property
    def grantee_id(self) -> str: ...
    @property
    def grantee_agency_id(self) -> str: ...
    @property
    def grantee_team(self) -> str | None: ...


class _NotOverseen(Exception):
    """Raised by a review's or a closing's decision when the caller may not oversee the access
    (its ``decision``, to be recorded), found on the history the command decides on."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.rule)
        self.decision = decision


async def _oversight_rule(
    access: AccessControl, principal: Principal, purpose: AccessPurpose, case_id: str
) -> Callable[[_Grantee | None], Decision]:
    """Whether ``principal`` oversees an emergency access on the case, given its grantee: a
    reviewer's role, then the policy's decision on reading the case's trail, else, on a case no
    team carries, supervising the grantee's team. The grantee is found in the history the
    command decides on (its opening, never a projection that may not have caught up), so the
    case's stream is read once."""
    refusal = reviewer_refusal(principal.role)
    if refusal is not None:
        refused = _refused(refusal)
        return lambda grantee: refused
    facts = await access.reader_facts(
        principal, Action.READ_TRAIL, purpose, case_id, subject=case_id
    )
    decision = access.decide(principal, Action.READ_TRAIL, purpose, facts)
    return lambda grantee: _or_grantee_supervision(
        decision, access, principal, purpose, facts, grantee
    )


def _or_grantee_supervision(
    decision: Decision,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    facts: CaseFacts,
    grantee: _Grantee | None,
) -> Decision:
    """``decision``, unless it refused a supervisor of the grantee's team on a case no team
    carries: then ``GRANTEE_SUPERVISION``."""
    if (
        decision.allowed
        or grantee is None
        or purpose is not AccessPurpose.SUPERVISION
        or not supervises_grantee(
            principal,
            home_agency=access.home_agency,
            case_team=facts.worker_team,
            grantee_id=grantee.grantee_id,
            grantee_agency_id=grantee.grantee_agency_id,
            grantee_team=grantee.grantee_team,
        )
    ):
        return decision
    return GRANTEE_SUPERVISION


def _oversight(principal: Principal) -> AccessPurpose:
    """The purpose a review is made under (a command states none): the reviewer's oversight
    (a refused non-reviewer is recorded under supervision, what a review would need)."""
    return OVERSIGHT_PURPOSE.get(principal.role, AccessPurpose.SUPERVISION)


def _refused(rule: str, purpose: AccessPurpose | None = None) -> Decision:
    detail = ""
    if rule == "purpose-not-permitted" and purpose is not None:
        detail = "the review queue is read for supervision by supervisors, for"
        detail += " confidentiality_review by auditors"
    return refusal(rule, detail)
