"""Scheduling decisions on the client's schedule (all of the client's cases at once)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from casetrail_platform.commands import (
    InvalidCommand,
    NotFound,
    RuleBroken,
    require_not_before,
)
from casetrail_platform.limits import (
    MAX_SERVICE_DURATION,
    OCCURRED_AT_CLOCK_SKEW,
    SERVICE_WINDOW_REACH,
)
from casetrail_platform.policy.redaction import category_revealed
from events.catalog.access import SensitiveCategory
from events.catalog.base import CaseEvent
from events.catalog.scheduling import (
    CancelledBy,
    ServiceCancelled,
    ServiceDelivered,
    ServiceKind,
    ServiceRescheduled,
    ServiceScheduled,
)
from events.errors import FieldProblem
from services.coordination.domain import errors
from services.coordination.domain.case import RUNNING_REFERRAL_STATUSES, CaseState, Referral
from services.coordination.domain.commands import (
    CancelService,
    RecordServiceDelivered,
    RescheduleService,
    ScheduleService,
)
from services.coordination.domain.facts import (
    CaseFacts,
    check_given_while_open,
    check_new_work,
    check_not_before_opening,
    check_not_while_closed,
)
from services.coordination.domain.permissions import require_own_provider
from services.coordination.domain.schedule import Schedule, ScheduleShown, Service, ServiceStatus

CLOSURE_REASON = "the case was closed"
REFERRAL_ENDED_REASON = "the referral it came from ended (declined, completed or withdrawn)"


def check_service_window(starts_at: datetime, ends_at: datetime, moment: datetime) -> None:
    """A service lasts at most a day and starts within a few years of the command's moment, so
    that no booking blocks a client's schedule for good (README, "Limits")."""
    problems = []
    if abs(starts_at - moment) > SERVICE_WINDOW_REACH:
        years = SERVICE_WINDOW_REACH.days // 366
        problems.append(
            FieldProblem("starts_at", f"must be within {years} years of the command's moment")
        )
    if ends_at - starts_at > MAX_SERVICE_DURATION:
        hours = int(MAX_SERVICE_DURATION.total_seconds() // 3600)
        problems.append(
            FieldProblem("ends_at", f"at most {hours} hours after starts_at (one service)")
        )
    if problems:
        raise InvalidCommand(problems)


def decide_schedule(
    schedule: Schedule,
    facts: CaseFacts,
    case: CaseState,
    command: ScheduleService,
    service_id: str,
    consented: Mapping[str, frozenset[SensitiveCategory]],
    occurred_at: datetime | None = None,
    *,
    shown: ScheduleShown,
) -> list[CaseEvent]:
    """``consented``: the sensitive categories each consent in force names, by consent id (read
    only for a service of a kind that tells of one, booked from a referral). ``occurred_at``:
    the command's moment (stated, else now), checked as new work's (``check_new_work``) and,
    booked from a referral, not before the referral was made.
    ``shown``: the services the caller is shown, the only ones a conflict tells the slot of."""
    check_new_work(facts, occurred_at)
    check_not_before_opening(facts, command.starts_at, "starts_at")
    check_not_while_closed(facts, command.starts_at)
    if command.referral_id is not None:
        referral = case.referrals.get(command.referral_id)
        if referral is None:
            raise NotFound("referral", command.referral_id)
        if referral.status not in RUNNING_REFERRAL_STATUSES:
            raise _referral_not_usable(
                referral, "services can only come from a pending or accepted referral"
            )
        # Dated before it, the history by the moments stated would hold a service booked
        # from a referral not yet made.
        require_not_before(
            occurred_at, f"referral {referral.referral_id} was made", referral.made_at
        )
        if referral.provider.provider_id != command.provider.provider_id:
            # The referral's provider reads the services of its referral, and the service's
            # provider records and cancels it: one agency, the one the client's consent named.
            raise RuleBroken(
                errors.REFERRAL_PROVIDER_MISMATCH,
                f"referral {referral.referral_id} was made to {referral.provider.provider_id};"
                f" a service from it is provided by that agency, not"
                f" {command.provider.provider_id}",
                subject=f"referral/{referral.referral_id}",
                referral_provider_id=referral.provider.provider_id,
            )
        _require_kind_consented(facts.case_id, referral, command.kind, consented)
    _require_free(
        schedule,
        facts.case_id,
        command.kind.value,
        command.starts_at,
        command.ends_at,
        None,
        shown,
    )
    return [
        ServiceScheduled(
            case_id=facts.case_id,
            service_id=service_id,
            kind=command.kind,
            provider=command.provider,
            starts_at=command.starts_at,
            ends_at=command.ends_at,
            location=command.location,
            referral_id=command.referral_id,
            goal_id=command.goal_id,
        )
    ]


def _require_kind_consented(
    case_id: str,
    referral: Referral,
    kind: ServiceKind,
    consented: Mapping[str, frozenset[SensitiveCategory]],
) -> None:
    """A service from a referral is read by the referral's provider: a kind telling of a
    sensitive category (``redaction.category_revealed``) discloses it as a referral of that
    need would (``MakeReferral`` needs a consent naming it), so it comes only from a referral
    of that need, or one made under a consent in force naming the category."""
    category = category_revealed(kind.value)
    if category is None or referral.need_category.value == category.value:
        return
    named = frozenset() if referral.consent_id is None else consented.get(referral.consent_id)
    if named is None or category not in named:
        raise errors.service_consent_required(
            case_id, referral.referral_id, referral.provider.provider_id
        )


def decide_reschedule(
    schedule: Schedule,
    facts: CaseFacts,
    case: CaseState,
    command: RescheduleService,
    occurred_at: datetime | None = None,
    *,
    shown: ScheduleShown,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), checked as new work's
    (``check_new_work``) and not before the service was scheduled or last moved (as for a
    cancellation and a delivery). ``shown``: as for ``decide_schedule``."""
    check_new_work(facts, occurred_at)
    check_not_before_opening(facts, command.starts_at, "starts_at")
    check_not_while_closed(facts, command.starts_at)
    service = _scheduled(schedule, command.case_id, command.service_id)
    require_not_before(occurred_at, service.last_change, service.changed_at)
    _require_before_referral_end(case, service, command.starts_at, "moved to start")
    _require_free(
        schedule,
        command.case_id,
        service.kind.value,
        command.starts_at,
        command.ends_at,
        service.service_id,
        shown,
    )
    return [
        ServiceRescheduled(
            case_id=command.case_id,
            service_id=service.service_id,
            starts_at=command.starts_at,
            ends_at=command.ends_at,
            location=command.location or service.location,
            reason=command.reason,
        )
    ]


def _require_before_referral_end(
    case: CaseState, service: Service, starts_at: datetime, done: str
) -> None:
    """A service from a referral that ended since was left scheduled only because it started
    before the end (its follow-up calls off the rest): ``done`` (moved, or recorded as
    delivered) at ``starts_at`` from that moment on, it would be care from a referral no
    longer running, a new booking from it."""
    referral = None if service.referral_id is None else case.referrals.get(service.referral_id)
    ended_at = None if referral is None else referral.ended_at
    if referral is not None and ended_at is not None and starts_at >= ended_at:
        raise _referral_not_usable(
            referral,
            f"it ended at {ended_at.isoformat()}, and a service from it cannot be {done}"
            " from then on",
            ended_at=ended_at.isoformat(),
        )


def _referral_not_usable(referral: Referral, why: str, **details: str) -> RuleBroken:
    return RuleBroken(
        errors.REFERRAL_NOT_USABLE,
        f"referral {referral.referral_id} is {referral.status.value}; {why}",
        subject=f"referral/{referral.referral_id}",
        status=referral.status.value,
        **details,
    )


def decide_cancel(
    schedule: Schedule,
    command: CancelService,
    acting_for: str | None,
    occurred_at: datetime | None = None,
) -> list[CaseEvent]:
    """``acting_for``: the partner agency of the verified caller, which must provide it, and
    which calls it off as the provider or on the client's word, never as the agency."""
    service = _scheduled(schedule, command.case_id, command.service_id, acting_for)
    if acting_for is not None and command.cancelled_by is CancelledBy.AGENCY:
        raise InvalidCommand(
            [
                FieldProblem(
                    "cancelled_by",
                    "a partner agency cancels as the provider, or for the client; the agency's"
                    " own cancellations are its staff's",
                )
            ]
        )
    require_not_before(occurred_at, service.last_change, service.changed_at)
    return [
        ServiceCancelled(
            case_id=command.case_id,
            service_id=service.service_id,
            cancelled_by=command.cancelled_by,
            reason=command.reason,
        )
    ]


def decide_delivered(
    schedule: Schedule,
    facts: CaseFacts,
    case: CaseState,
    command: RecordServiceDelivered,
    now: datetime,
    acting_for: str | None,
    occurred_at: datetime | None = None,
    *,
    shown: ScheduleShown,
) -> list[CaseEvent]:
    """A delivery is a fact about the past: it cannot end after the server's ``now`` (give or
    take ``OCCURRED_AT_CLOCK_SKEW``, the drift a command's own moment is allowed), nor start
    after the case's closure (a visit made before the closure may still be written up), nor
    in a time it was closed before a reopening, nor, booked from a referral, from the moment
    that referral ended (as it is not moved there, ``decide_reschedule``).
    ``acting_for``: the partner agency of the verified caller, which must provide it.
    ``shown``: as for ``decide_schedule`` (for the agency's staff; a partner is told of no
    other service)."""
    service = _scheduled(schedule, command.case_id, command.service_id, acting_for)
    require_not_before(occurred_at, service.last_change, service.changed_at)
    check_not_before_opening(facts, command.starts_at, "starts_at")
    if command.ends_at > now + OCCURRED_AT_CLOCK_SKEW:
        # Its end too: a service still under way is not yet care given, nor claimable.
        raise RuleBroken(
            errors.SERVICE_NOT_YET_DELIVERABLE,
            f"service {service.service_id} cannot be recorded as delivered until"
            f" {command.ends_at.isoformat()}: that is still to come (now {now.isoformat()})",
            subject=f"service/{service.service_id}",
            starts_at=command.starts_at.isoformat(),
            ends_at=command.ends_at.isoformat(),
        )
    check_given_while_open(facts, command.starts_at)
    _require_before_referral_end(case, service, command.starts_at, "recorded as delivered starting")
    # Where it actually took place must be free too: the client was not in two places.
    if acting_for is None:
        _require_free(
            schedule,
            command.case_id,
            service.kind.value,
            command.starts_at,
            command.ends_at,
            service.service_id,
            shown,
        )
    elif schedule.conflict(command.starts_at, command.ends_at, service.service_id) is not None:
        # A partner sees only its referrals' services: the other one is not named to it.
        raise errors.schedule_conflict_withheld(
            service.kind.value, command.starts_at, command.ends_at
        )
    return [
        ServiceDelivered(
            case_id=command.case_id,
            service_id=service.service_id,
            starts_at=command.starts_at,
            ends_at=command.ends_at,
            note=command.note,
        )
    ]


def decide_closure_cancellations(schedule: Schedule, facts: CaseFacts) -> list[CaseEvent]:
    """What the case's closure calls off: its services still scheduled to start at or after
    the closure it is in now (those before it may still be recorded as delivered), and those
    starting in a time it was closed before a reopening (none can be delivered there,
    ``check_not_while_closed``; booked before a closure that reached coordination only after
    its reopening, they would hold their slots and budget for ever). Free slots for the
    client's other cases; planning's own check of scheduled services sees the schedule only
    through the bus, so a service booked as the case closed would otherwise outlive it."""
    closed_at = facts.closed_at

    def called_off(starts_at: datetime) -> bool:
        return (closed_at is not None and starts_at >= closed_at) or any(
            period.holds(starts_at) for period in facts.closed_periods
        )

    return _calling_off(schedule, facts.case_id, called_off, CLOSURE_REASON)


def decide_referral_end_cancellations(
    schedule: Schedule, case_id: str, referral_id: str, ended_at: datetime
) -> list[CaseEvent]:
    """What a referral's decline, completion or withdrawal calls off: the services booked from
    it still scheduled to start at or after that moment. The provider will not give them (it
    declined, or its part ended), and they would hold the client's slots and budget for ever
    (none can be moved, nor the case closed, while they are scheduled); those before it may
    still be recorded as delivered."""
    return _calling_off(
        schedule,
        case_id,
        lambda starts_at: starts_at >= ended_at,
        REFERRAL_ENDED_REASON,
        referral_id,
    )


def cancellations_not_before(
    schedule: Schedule, cancellations: Sequence[CaseEvent]
) -> datetime | None:
    """The moment the follow-ups' ``cancellations`` cannot be dated before: the latest moment
    one of the services they call off was scheduled or last moved (``None``: none known), as
    ``decide_cancel`` refuses a command's. A booking may state a moment ahead of the clock (the
    skew commands are allowed), and a cancellation dated before it would show, as of that
    moment, a service called off before it was booked: audit's state as it happened would
    keep it scheduled for good."""
    booked = (
        schedule.services[event.service_id].changed_at
        for event in cancellations
        if isinstance(event, ServiceCancelled)
    )
    return max((moment for moment in booked if moment is not None), default=None)


def _calling_off(
    schedule: Schedule,
    case_id: str,
    called_off: Callable[[datetime], bool],
    reason: str,
    referral_id: str | None = None,
) -> list[CaseEvent]:
    """The agency's cancellations of the case's services still scheduled to start at a moment
    ``called_off`` holds (only those booked from ``referral_id``, when given)."""
    return [
        ServiceCancelled(
            case_id=case_id,
            service_id=service.service_id,
            cancelled_by=CancelledBy.AGENCY,
            reason=reason,
        )
        for service in schedule.services.values()
        if service.case_id == case_id
        and (referral_id is None or service.referral_id == referral_id)
        and service.status is ServiceStatus.SCHEDULED
        and called_off(service.starts_at)
    ]


def _scheduled(
    schedule: Schedule, case_id: str, service_id: str, acting_for: str | None = None
) -> Service:
    """The case's service, still scheduled. ``acting_for``: a partner agency, which acts only
    on services it provides and learns nothing of another's (not even its status)."""
    service = provided_service(schedule, case_id, service_id, acting_for)
    if service is None:
        raise NotFound("service", service_id)
    if service.status is not ServiceStatus.SCHEDULED:
        raise RuleBroken(
            errors.SERVICE_NOT_SCHEDULED,
            f"service {service_id} is {service.status.value}; only a scheduled service can change",
            subject=f"service/{service_id}",
            status=service.status.value,
        )
    return service


def provided_service(
    schedule: Schedule | None, case_id: str, service_id: str, acting_for: str | None
) -> Service | None:
    """The case's service (``None``: no such service, or ``schedule`` ``None``: no such
    case), refused to a partner agency (``acting_for``) that does not provide it, a missing one
    alike (``require_own_provider``)."""
    service = None if schedule is None else schedule.of_case(case_id, service_id)
    provider_id = None if service is None else service.provider.provider_id
    require_own_provider(acting_for, provider_id, f"service {service_id}")
    return service


def _require_free(
    schedule: Schedule,
    case_id: str,
    kind: str,
    starts_at: datetime,
    ends_at: datetime,
    ignore: str | None,
    shown: ScheduleShown,
) -> None:
    """``case_id``: the case the command is about (a conflict with another case's service
    names none of it); ``shown``: the services the caller is shown, whose slot alone a
    conflict tells (``errors.schedule_conflict``)."""
    other = schedule.conflict(starts_at, ends_at, ignore, shown=shown.shows)
    if other is not None:
        raise errors.schedule_conflict(
            case_id,
            kind,
            starts_at,
            ends_at,
            other.service_id,
            other.case_id,
            other.kind.value,
            other.starts_at,
            other.ends_at,
            shown=shown.shows(other),
        )
