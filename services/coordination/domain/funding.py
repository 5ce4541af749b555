"""Paying for services: agency budget reservations that never overspend a line, and insurance
claims for the case's services."""

from __future__ import annotations

from datetime import datetime

from casetrail_platform.commands import (
    InvalidCommand,
    NotFound,
    RuleBroken,
    require_not_before,
)
from casetrail_platform.limits import MAX_RESERVATIONS_PER_CASE, MAX_RESERVATIONS_PER_SERVICE
from events.catalog.base import CaseEvent
from events.catalog.funding import (
    BudgetReleased,
    BudgetReserved,
    ClaimDecision,
    InsuranceClaimDecided,
    InsuranceClaimFiled,
)
from events.catalog.values import Money
from events.errors import FieldProblem
from services.coordination.domain import errors
from services.coordination.domain.agency import BudgetLine
from services.coordination.domain.budget import BudgetLineState, Reservation
from services.coordination.domain.case import CaseState
from services.coordination.domain.commands import (
    FileInsuranceClaim,
    RecordClaimDecision,
    ReleaseBudget,
    ReserveBudget,
)
from services.coordination.domain.facts import CaseFacts, check_given_while_open, check_new_work
from services.coordination.domain.schedule import Schedule, ServiceStatus
from services.coordination.domain.validation import validated


def decide_reservation(
    line: BudgetLine,
    state: BudgetLineState,
    facts: CaseFacts,
    schedule: Schedule,
    command: ReserveBudget,
    reservation_id: str,
    occurred_at: datetime | None = None,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), checked as new work's
    (``check_new_work``), and not before the booking of the service it names: audit's state
    as of the reservation would fund a service not booked yet. A move since does not count
    (money reserved before a service was moved is still for it)."""
    check_new_work(facts, occurred_at)
    _same_currency(command.amount, line.amount.currency, "amount.currency", line.budget_line)
    service = None
    if command.service_id is not None:
        service = schedule.of_case(facts.case_id, command.service_id)
        if service is None:
            raise NotFound("service", command.service_id)
        if service.status is ServiceStatus.CANCELLED:
            raise _service_cancelled(service.service_id)
        require_not_before(
            occurred_at, f"service {service.service_id} was scheduled", service.scheduled_at
        )
    if line.funds_service_kinds and (
        service is None or service.kind not in line.funds_service_kinds
    ):
        raise errors.budget_line_does_not_fund_service(
            line.budget_line,
            [kind.value for kind in line.funds_service_kinds],
            None if service is None else service.service_id,
        )
    _require_room(line, state, facts.case_id, command.service_id)
    available = line.amount.amount_minor_units - state.committed
    if command.amount.amount_minor_units > available:
        raise errors.budget_exceeded(line.budget_line, command.amount, available)
    return [
        BudgetReserved(
            case_id=facts.case_id,
            reservation_id=reservation_id,
            budget_line=line.budget_line,
            amount=command.amount,
            service_id=command.service_id,
        )
    ]


def _require_room(
    line: BudgetLine, state: BudgetLineState, case_id: str, service_id: str | None
) -> None:
    """A service's reservations on the line (or a case's naming no service) are bounded: top-ups
    are legitimate, but each stays in the line's stream for good."""
    limit = MAX_RESERVATIONS_PER_CASE if service_id is None else MAX_RESERVATIONS_PER_SERVICE
    held = sum(
        1
        for reservation in state.reservations.values()
        if reservation.case_id == case_id and reservation.service_id == service_id
    )
    if held >= limit:
        raise errors.too_many_reservations(line.budget_line, case_id, service_id, limit)


def decide_release(
    line: BudgetLine,
    state: BudgetLineState,
    command: ReleaseBudget,
    occurred_at: datetime | None = None,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), not before the reservation was
    made."""
    reservation = _reservation_of_case(state, command.case_id, command.reservation_id)
    require_not_before(
        occurred_at,
        f"reservation {reservation.reservation_id} was made",
        reservation.reserved_at,
    )
    if reservation.remaining == 0:
        raise RuleBroken(
            errors.RESERVATION_ALREADY_RELEASED,
            f"reservation {reservation.reservation_id} was already released in full",
            subject=f"reservation/{reservation.reservation_id}",
        )
    amount = command.amount or Money(
        amount_minor_units=reservation.remaining, currency=line.amount.currency
    )
    _same_currency(amount, line.amount.currency, "amount.currency", line.budget_line)
    if amount.amount_minor_units > reservation.remaining:
        raise RuleBroken(
            errors.RELEASE_EXCEEDS_RESERVATION,
            f"reservation {reservation.reservation_id} holds {reservation.remaining}; "
            f"{amount.amount_minor_units} cannot be released",
            subject=f"reservation/{reservation.reservation_id}",
            remaining=str(reservation.remaining),
            requested=str(amount.amount_minor_units),
            currency=amount.currency,
        )
    return [
        BudgetReleased(
            case_id=command.case_id,
            reservation_id=reservation.reservation_id,
            budget_line=line.budget_line,
            amount=amount,
            service_id=reservation.service_id,
            reason=command.reason,
        )
    ]


def decide_releases(
    line: BudgetLine, state: BudgetLineState, case_id: str, service_id: str | None, reason: str
) -> list[CaseEvent]:
    """Give back what is still reserved on ``line`` for one of the case's services (money is
    not kept for a service that was called off), or with ``service_id`` ``None`` for the case
    itself, naming no service (money is not kept for a case that closed: nothing records it
    spent, as a delivery does a service's)."""
    return [
        BudgetReleased(
            case_id=case_id,
            reservation_id=reservation.reservation_id,
            budget_line=line.budget_line,
            amount=Money(amount_minor_units=reservation.remaining, currency=line.amount.currency),
            service_id=reservation.service_id,
            reason=reason,
        )
        for reservation in _still_reserved(state, case_id, service_id)
    ]


def releases_not_before(
    state: BudgetLineState, case_id: str, service_id: str | None
) -> datetime | None:
    """The moment ``decide_releases``' releases cannot be dated before: the latest moment one
    of the reservations they release was made at (``None``: none known), as ``decide_release``
    refuses a command's. A reservation may state a moment ahead of the clock (the skew
    commands are allowed), and a release dated before it would show, as of that moment, money
    given back that was not reserved yet."""
    made = [
        reservation.reserved_at
        for reservation in _still_reserved(state, case_id, service_id)
        if reservation.reserved_at is not None
    ]
    return max(made, default=None)


def _still_reserved(
    state: BudgetLineState, case_id: str, service_id: str | None
) -> list[Reservation]:
    return [
        reservation
        for reservation in state.reservations.values()
        if reservation.case_id == case_id
        and reservation.remaining > 0
        and reservation.service_id == service_id
    ]


def decide_claim(
    case: CaseState,
    facts: CaseFacts,
    schedule: Schedule,
    command: FileInsuranceClaim,
    claim_id: str,
    occurred_at: datetime | None = None,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), not before the delivery of
    any service it claims was recorded (a claim follows the care it is for), nor before the
    denial of an earlier claim for it (the denial freed it: dated before, two claims would
    cover the service at once)."""
    claimed = {
        service_id: claim.claim_id
        for claim in case.claims.values()
        if claim.covers_services
        for service_id in claim.service_ids
    }
    for service_id in command.service_ids:
        service = schedule.of_case(facts.case_id, service_id)
        if service is None:
            raise NotFound("service", service_id)
        if service.status is ServiceStatus.CANCELLED:
            raise _service_cancelled(service_id)
        if service.status is not ServiceStatus.DELIVERED:
            # Insurers pay for care given: a claim waits for the delivery to be recorded.
            raise RuleBroken(
                errors.SERVICE_NOT_DELIVERED,
                f"service {service_id} is {service.status.value}; only a delivered service can"
                " be claimed (RecordServiceDelivered first)",
                subject=f"service/{service_id}",
                status=service.status.value,
            )
        require_not_before(occurred_at, service.last_change, service.changed_at)
        for denied in case.claims.values():
            if service_id in denied.service_ids and not denied.covers_services:
                require_not_before(
                    occurred_at, f"claim {denied.claim_id} was denied", denied.decided_at
                )
        # A delivery recorded before the closure reached coordination may start after it, on
        # the case closed still or reopened since: no care the case gave.
        check_given_while_open(facts, service.starts_at)
        if service_id in claimed:
            raise RuleBroken(
                errors.SERVICE_ALREADY_CLAIMED,
                f"service {service_id} is already covered by claim {claimed[service_id]}",
                subject=f"service/{service_id}",
                claim_id=claimed[service_id],
            )
    return [
        InsuranceClaimFiled(
            case_id=facts.case_id,
            claim_id=claim_id,
            insurer=command.insurer,
            policy_number=command.policy_number,
            amount_claimed=command.amount_claimed,
            service_ids=command.service_ids,
        )
    ]


def decide_claim_decision(
    case: CaseState, command: RecordClaimDecision, occurred_at: datetime | None = None
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), not before the claim was
    filed."""
    claim = case.claims.get(command.claim_id)
    if claim is None:
        raise NotFound("claim", command.claim_id)
    require_not_before(occurred_at, f"claim {claim.claim_id} was filed", claim.filed_at)
    if claim.decision is not None:
        raise RuleBroken(
            errors.CLAIM_ALREADY_DECIDED,
            f"claim {claim.claim_id} was already decided: {claim.decision.value}",
            subject=f"claim/{claim.claim_id}",
            decision=claim.decision.value,
        )
    if claim.insurer.provider_id != command.insurer_id:
        raise RuleBroken(
            errors.INSURER_MISMATCH,
            f"claim {claim.claim_id} was filed with {claim.insurer.provider_id}, "
            f"not {command.insurer_id}",
            subject=f"claim/{claim.claim_id}",
            claim_insurer_id=claim.insurer.provider_id,
        )
    claimed = claim.amount_claimed
    _same_currency(command.amount_approved, claimed.currency, "amount_approved.currency", None)
    if command.amount_approved.amount_minor_units > claimed.amount_minor_units:
        raise RuleBroken(
            errors.APPROVED_AMOUNT_EXCEEDS_CLAIM,
            f"claim {claim.claim_id} was for {claimed.amount_minor_units} {claimed.currency}; "
            f"{command.amount_approved.amount_minor_units} cannot be approved",
            subject=f"claim/{claim.claim_id}",
            amount_claimed=str(claimed.amount_minor_units),
            currency=claimed.currency,
        )
    approved = command.amount_approved.amount_minor_units
    if (command.decision is ClaimDecision.APPROVED and approved != claimed.amount_minor_units) or (
        command.decision is ClaimDecision.PARTIAL and approved == claimed.amount_minor_units
    ):
        # Paid in full is "approved"; anything less is "partial", which must give its reason.
        raise InvalidCommand(
            [
                FieldProblem(
                    "amount_approved",
                    f"must be the {claimed.amount_minor_units} {claimed.currency} claimed when"
                    " the decision is approved, and less when it is partial",
                )
            ]
        )
    # The catalog ties amount and reason to the decision (denied: zero and a reason).
    decided = validated(
        InsuranceClaimDecided,
        {
            "case_id": command.case_id,
            "claim_id": claim.claim_id,
            "insurer_id": command.insurer_id,
            "decision": command.decision,
            "amount_approved": command.amount_approved,
            "reason": command.reason,
        },
    )
    return [decided]


def _reservation_of_case(state: BudgetLineState, case_id: str, reservation_id: str) -> Reservation:
    reservation = state.reservations.get(reservation_id)
    if reservation is None or reservation.case_id != case_id:
        raise NotFound("reservation", reservation_id)
    return reservation


def _same_currency(money: Money, currency: str, field: str, budget_line: str | None) -> None:
    if money.currency != currency:
        of = f"budget line {budget_line}" if budget_line else "the claim"
        raise InvalidCommand([FieldProblem(field, f"must be {currency}, the currency of {of}")])


def _service_cancelled(service_id: str) -> RuleBroken:
    return RuleBroken(
        errors.SERVICE_CANCELLED,
        f"service {service_id} was cancelled",
        subject=f"service/{service_id}",
    )
