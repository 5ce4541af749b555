"""Who may carry a case: a case-carrying worker whose credentials fit the needs and whose
caseload has room. Counseling needs call for a licensed social worker; a case manager may not
counsel and refers the client out instead (a need referred out no longer calls for a licence).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from casetrail_platform.commands import NotFound, RuleBroken, require_not_before
from casetrail_platform.policy.redaction import is_sensitive_code
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
from services.coordination.domain.facts import CaseFacts, check_new_work


def open_needs(facts: CaseFacts, state: CaseState) -> tuple[NeedCategory, ...]:
    """The case's needs its worker must take on: those not referred to an outside provider."""
    referred = state.referred_needs()
    return tuple(need for need in facts.needs if need not in referred)


def counseling_licence(worker: Worker, on: date) -> WorkerCredential | None:
    """The worker's licence that allows counseling, valid on ``on``, if any."""
    return counseling_licence_of(worker.role, worker.credentials, on)


def fit_refusals(
    case_id: str,
    worker: Worker,
    needs: Sequence[NeedCategory],
    caseload: int,
    on: date,
    *,
    sensitive_shown: bool = False,
) -> list[RuleBroken]:
    """Every reason the worker may not take the case, most fundamental first (empty: fits).
    ``sensitive_shown``: whether the reader may see the case's sensitive values, without which
    they are not told that its needs call for counseling unless a need they are shown does
    (``_licence_refusal``)."""
    refusals = []
    if worker.role not in CASE_CARRYING_ROLES:
        refusals.append(errors.worker_does_not_carry_cases(worker.worker_id, worker.role.value))
    if any(need in COUNSELING_NEEDS for need in needs) and counseling_licence(worker, on) is None:
        refusals.append(_licence_refusal(case_id, worker, needs, sensitive_shown=sensitive_shown))
    if caseload >= worker.caseload_capacity:
        refusals.append(errors.caseload_full(worker.worker_id, caseload, worker.caseload_capacity))
    return refusals


def _licence_refusal(
    case_id: str, worker: Worker, needs: Sequence[NeedCategory], *, sensitive_shown: bool
) -> RuleBroken:
    """The refusal of a worker who may not counsel a case whose open ``needs`` call for it:
    ``COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER`` to a reader who may see every need, or who is
    shown one calling for counseling (``counseling`` is no special data); to any other, those
    calling for it are special data withheld from them, and saying so would tell them the case
    has one: ``WORKER_LACKS_REQUIRED_CREDENTIAL``, the same whichever need it is. The rule holds
    alike for both."""
    if counseling_shown(needs, sensitive_shown=sensitive_shown):
        return errors.counseling_requires_licence(case_id, worker.worker_id, worker.role.value)
    return errors.credential_required(case_id, worker.worker_id, worker.role.value)


def counseling_shown(needs: Sequence[NeedCategory], *, sensitive_shown: bool) -> bool:
    """Whether a reader may be told that ``needs`` call for counseling: one of them does and is
    shown to them (every need when ``sensitive_shown``, else only those no special data, as
    ``counseling`` is). Told to any other, it would say the case has a withheld need."""
    shown = [need for need in needs if sensitive_shown or not is_sensitive_code(need.value)]
    return any(need in COUNSELING_NEEDS for need in shown)


def decide_assignment(
    state: CaseState,
    facts: CaseFacts,
    worker: Worker | None,
    caseload: int,
    command: AssignCase,
    on: date,
    occurred_at: datetime | None = None,
    *,
    sensitive_shown: bool = False,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), checked as new work's
    (``check_new_work``); ``sensitive_shown``: whether the caller may see the case's sensitive
    values, which a refusal tells them of only then (``fit_refusals``)."""
    check_new_work(facts, occurred_at)
    if worker is None:
        raise NotFound("worker", command.worker_id)
    if state.worker_id is not None:
        raise RuleBroken(
            errors.CASE_ALREADY_ASSIGNED,
            f"case {facts.case_id} is already carried by {state.worker_id}; use TransferCase",
            subject=f"case/{facts.case_id}",
            current_worker_id=state.worker_id,
        )
    needs = _fitting(facts, state, worker, caseload, on, sensitive_shown)
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
    *,
    sensitive_shown: bool = False,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), checked as new work's
    (``check_new_work``) and not before the current assignment; ``sensitive_shown`` as for
    ``decide_assignment``."""
    check_new_work(facts, occurred_at)
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
    _fitting(facts, state, worker, caseload, on, sensitive_shown)
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
    facts: CaseFacts,
    state: CaseState,
    worker: Worker,
    caseload: int,
    on: date,
    sensitive_shown: bool,
) -> tuple[NeedCategory, ...]:
    needs = open_needs(facts, state)
    refusals = fit_refusals(
        facts.case_id, worker, needs, caseload, on, sensitive_shown=sensitive_shown
    )
    if refusals:
        raise refusals[0]
    return needs
