"""Who may carry a case: a case-carrying worker whose credentials fit the needs and whose
caseload has room. Counseling needs call for a licensed social worker; a case manager may not
counsel and refers the client out instead (a need referred out no longer calls for a licence).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from casetrail_platform.commands import NotFound, RuleBroken, require_not_before
from events.catalog.assignment import (
    CASE_CARRYING_ROLES,
    COUNSELING_NEEDS,
    CaseAssigned,
    CaseReassigned,
    WorkerCredential,
)
from events.catalog.assignment import counseling_licence as counseling_licence_of
from events.catalog.base import CaseEvent
from events.catalog.values import NeedCategory
from services.coordination.domain import errors
from services.coordination.domain.agency import Worker
from services.coordination.domain.case import CaseState
from services.coordination.domain.commands import AssignCase, TransferCase
from services.coordination.domain.facts import CaseFacts


def open_needs(facts: CaseFacts, state: CaseState) -> tuple[NeedCategory, ...]:
    """The case's needs its worker must take on: those not referred to an outside provider."""
    referred = state.referred_needs()
    return tuple(need for need in facts.needs if need not in referred)


def counseling_licence(worker: Worker, on: date) -> WorkerCredential | None:
    """The worker's licence that allows counseling, valid on ``on``, if any."""
    return counseling_licence_of(worker.role, worker.credentials, on)


def fit_refusals(
    case_id: str, worker: Worker, needs: Sequence[NeedCategory], caseload: int, on: date
) -> list[RuleBroken]:
    """Every reason the worker may not take the case, most fundamental first (empty: fits)."""
    refusals = []
    if worker.role not in CASE_CARRYING_ROLES:
        refusals.append(errors.worker_does_not_carry_cases(worker.worker_id, worker.role.value))
    if any(need in COUNSELING_NEEDS for need in needs) and counseling_licence(worker, on) is None:
        refusals.append(
            errors.counseling_requires_licence(case_id, worker.worker_id, worker.role.value)
        )
    if caseload >= worker.caseload_capacity:
        refusals.append(errors.caseload_full(worker.worker_id, caseload, worker.caseload_capacity))
    return refusals


def decide_assignment(
    state: CaseState,
    facts: CaseFacts,
    worker: Worker | None,
    caseload: int,
    command: AssignCase,
    on: date,
) -> list[CaseEvent]:
    if facts.closed:
        raise errors.case_closed(facts.case_id)
    if worker is None:
        raise NotFound("worker", command.worker_id)
    if state.worker_id is not None:
        raise RuleBroken(
            errors.CASE_ALREADY_ASSIGNED,
            f"case {facts.case_id} is already carried by {state.worker_id}; use TransferCase",
            subject=f"case/{facts.case_id}",
            current_worker_id=state.worker_id,
        )
    needs = _fitting(facts, state, worker, caseload, on)
    return [
        CaseAssigned(
            case_id=facts.case_id,
            worker_id=worker.worker_id,
            worker_role=worker.role,
            credentials=worker.credentials,
            matched_needs=needs,
            reason=command.reason or explain(worker, needs, caseload, on),
            worker_team=worker.team,
        )
    ]


def decide_transfer(
    state: CaseState,
    facts: CaseFacts,
    worker: Worker | None,
    caseload: int,
    command: TransferCase,
    on: date,
    occurred_at: datetime | None = None,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), not before the current
    assignment."""
    if facts.closed:
        raise errors.case_closed(facts.case_id)
    if worker is None:
        raise NotFound("worker", command.worker_id)
    if state.worker_id is None:
        raise RuleBroken(
            errors.CASE_NOT_ASSIGNED,
            f"case {facts.case_id} has no worker yet; use AssignCase",
            subject=f"case/{facts.case_id}",
        )
    if state.worker_id == worker.worker_id:
        raise RuleBroken(
            errors.ALREADY_ASSIGNED_TO_WORKER,
            f"case {facts.case_id} is already carried by {worker.worker_id}",
            subject=f"case/{facts.case_id}",
            current_worker_id=state.worker_id,
        )
    require_not_before(
        occurred_at, f"case {facts.case_id} was given to its current worker", state.assigned_at
    )
    _fitting(facts, state, worker, caseload, on)
    return [
        CaseReassigned(
            case_id=facts.case_id,
            previous_worker_id=state.worker_id,
            worker_id=worker.worker_id,
            worker_role=worker.role,
            credentials=worker.credentials,
            reason=command.reason,
            worker_team=worker.team,
        )
    ]


def explain(worker: Worker, needs: Sequence[NeedCategory], caseload: int, on: date) -> str:
    """Why the worker fits, in words for the case record. ``reason`` is not a sealed field, and
    history is never rewritten: it neither names nor counts the needs (``matched_needs``,
    sealed and redacted, holds which), so an erasure leaves no need category behind in it, and
    a reader shown only the needs that are no special data cannot count the others from it."""
    licence = counseling_licence(worker, on)
    qualification = f"{licence.name} licence" if licence is not None else worker.role.value
    covered = "the case's open needs" if needs else "a case with no open needs"
    return (
        f"{qualification} fits {covered}; caseload {caseload} of {worker.caseload_capacity} "
        "before this case"
    )


def _fitting(
    facts: CaseFacts, state: CaseState, worker: Worker, caseload: int, on: date
) -> tuple[NeedCategory, ...]:
    needs = open_needs(facts, state)
    refusals = fit_refusals(facts.case_id, worker, needs, caseload, on)
    if refusals:
        raise refusals[0]
    return needs
