"""The planning service's refusals: rule names and the exceptions that carry them."""

from __future__ import annotations

from collections.abc import Iterable, Set
from datetime import date

from casetrail_platform.commands import RuleBroken
from events.catalog.assignment import COUNSELING_LICENCES
from events.catalog.cases import DischargeReason
from events.catalog.planning import PlanTask
from services.planning.domain.model import StaffMember

CASE_CLOSED = "CASE_CLOSED"
PLAN_NOT_DRAFTED = "PLAN_NOT_DRAFTED"
PLAN_HAS_NO_GOALS = "PLAN_HAS_NO_GOALS"
PLAN_ALREADY_AGREED = "PLAN_ALREADY_AGREED"
PLAN_VERSION_CHANGED = "PLAN_VERSION_CHANGED"
PLAN_NOT_AGREED = "PLAN_NOT_AGREED"
GOAL_NOT_ACTIVE = "GOAL_NOT_ACTIVE"
GOAL_DROPPED = "GOAL_DROPPED"
GOAL_UNCHANGED = "GOAL_UNCHANGED"
SERVICES_STILL_SCHEDULED = "SERVICES_STILL_SCHEDULED"
REFERRALS_STILL_RUNNING = "REFERRALS_STILL_RUNNING"
CASE_NOT_ASSIGNED = "CASE_NOT_ASSIGNED"
CASE_NOT_ASSESSED = "CASE_NOT_ASSESSED"
GOAL_NOT_AGREED = "GOAL_NOT_AGREED"
COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER = "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
"""Coordination's rule name for the same rule (assignment), so callers handle one."""
GOALS_STILL_ACTIVE = "GOALS_STILL_ACTIVE"
NO_GOAL_ACHIEVED = "NO_GOAL_ACHIEVED"
AGREEMENT_WITHOUT_CLIENT = "AGREEMENT_WITHOUT_CLIENT"
PLAN_TOO_LARGE = "PLAN_TOO_LARGE"


def case_closed(case_id: str) -> RuleBroken:
    return RuleBroken(CASE_CLOSED, f"case {case_id} is closed", subject=case_id)


def plan_not_drafted(case_id: str) -> RuleBroken:
    return RuleBroken(
        PLAN_NOT_DRAFTED,
        f"case {case_id} has no plan yet (a reopened case starts a new one); draft one first",
        subject=case_id,
    )


def plan_not_agreed(plan_id: str) -> RuleBroken:
    return RuleBroken(PLAN_NOT_AGREED, "the client has not agreed to the plan yet", subject=plan_id)


def goal_not_active(goal_id: str, status: str) -> RuleBroken:
    return RuleBroken(
        GOAL_NOT_ACTIVE,
        f"goal {goal_id} is {status}; only active goals can be revised, achieved or dropped",
        subject=goal_id,
        status=status,
    )


UNLISTED = "special_data"
"""A closure's refusal's ``unlisted``, to a caller not entitled to sensitive values: entries
(services, referrals, goals) of a special-data kind or need are not listed (``_listing``)."""


def services_still_scheduled(
    case_id: str, service_ids: Iterable[str], withheld: Set[str] | None = None
) -> RuleBroken:
    """``withheld``: to a caller not entitled to sensitive values, the ids they are not shown
    (``CaseFacts.special_entry_ids``, maybe none), left out of the refusal (``_listing``);
    ``None``: the caller may see every one."""
    listed, said = _listing(sorted(service_ids), withheld)
    return RuleBroken(
        SERVICES_STILL_SCHEDULED,
        f"services are still scheduled ({said}); deliver or cancel them before closing",
        subject=case_id,
        service_ids=listed,
        **_unlisted(withheld),
    )


def referrals_still_running(
    case_id: str, referral_ids: Iterable[str], withheld: Set[str] | None = None
) -> RuleBroken:
    """``withheld`` as for ``services_still_scheduled``."""
    listed, said = _listing(sorted(referral_ids), withheld)
    return RuleBroken(
        REFERRALS_STILL_RUNNING,
        f"referrals are still pending or accepted ({said}); the partner agency completes or"
        " declines them before the case is closed",
        subject=case_id,
        referral_ids=listed,
        **_unlisted(withheld),
    )


def goals_still_active(
    case_id: str, goal_ids: Iterable[str], withheld: Set[str] | None = None
) -> RuleBroken:
    """``goal_ids``: the plan's active goals, in the plan's order; ``withheld`` as for
    ``services_still_scheduled`` (the goals of a special-data need, withheld whole from the
    caller's case view)."""
    listed, said = _listing(goal_ids, withheld)
    return RuleBroken(
        GOALS_STILL_ACTIVE,
        f"goals are still active ({said}); achieve or drop them before closing with reason"
        f" {DischargeReason.GOALS_ACHIEVED.value}",
        subject=case_id,
        goal_ids=listed,
        **_unlisted(withheld),
    )


def _listing(ids: Iterable[str], withheld: Set[str] | None) -> tuple[str, str]:
    """The ids a closure's refusal lists (those not ``withheld``, in the order given), and how
    its message says them: to a caller not entitled to sensitive values (``withheld`` not
    ``None``) in the same words whether the case has such an entry or not, and whichever need
    or kind, so that only a refusal listing none tells that one blocks the closure (the rule
    holds alike)."""
    if withheld is None:
        listed = ",".join(ids)
        return listed, listed
    listed = ",".join(i for i in ids if i not in withheld)
    return listed, f"{listed or 'none you are shown'}; any of special data are withheld from you"


def _unlisted(withheld: Set[str] | None) -> dict[str, str]:
    return {} if withheld is None else {"unlisted": UNLISTED}


def plan_too_large(plan_id: str, what: str, limit: int) -> RuleBroken:
    return RuleBroken(
        PLAN_TOO_LARGE,
        f"the plan would hold more than {limit:,} {what}; drop or revise goals into fewer"
        " (every goal, dropped and achieved ones too, stays in the plan its case view shows)",
        subject=plan_id,
        limit=str(limit),
    )


def goal_not_agreed(goal_id: str) -> RuleBroken:
    return RuleBroken(
        GOAL_NOT_AGREED,
        f"the client has not agreed to goal {goal_id} as it stands (added or revised since the"
        " last agreement); record their agreement to the current plan first",
        subject=goal_id,
    )


def counseling_requires_licence(
    path: str, task: PlanTask, worker_id: str | None, member: StaffMember | None, on: date
) -> RuleBroken:
    """Names the task, the worker, the rule and the day the licence must be valid on
    (``on``), never the need (special data, and refusals reach logs) nor the task's
    description."""
    return RuleBroken(
        COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER,
        f"task {task.task_id} ({path}) is counseling toward a need that calls for it, which only"
        f" a licensed social worker ({_LICENCES}) may give; {_held(worker_id, member, on)}."
        " Make a licensed social worker its owner, or refer the client to a counseling"
        " provider (MakeReferral) and make the task the provider's",
        subject=task.task_id,
        field=f"{path}.owner.owner_id",
        worker_id=worker_id or "",
        required_licences=",".join(COUNSELING_LICENCES),
        suggested_action="MakeReferral",
    )


def counseling_carried_by_unlicensed_worker(
    goal_id: str,
    path: str,
    task: PlanTask,
    worker_id: str | None,
    member: StaffMember | None,
    on: date,
) -> RuleBroken:
    """A counseling task of the plan whose worker may not counsel: the owner it names (whose
    licence lapsed since it was planned), or, naming none, the case's worker who carries it
    (the case transferred since): ``path`` is ReviseGoal's field that gives the task an owner.
    What to do comes first: a refusal's texts are cut short (``grpc_platform.errors``). Names
    no need nor description, as above."""
    carried_by = (
        "names no owner, so the case's worker carries it"
        if task.owner.owner_id is None
        else "is carried by the owner it names"
    )
    return RuleBroken(
        COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER,
        f"goal {goal_id}'s task {task.task_id} must be reassigned to a licensed social worker"
        f" ({_LICENCES}) with ReviseGoal ({path}.owner.owner_id), or the client referred to a"
        " counseling provider (MakeReferral), before the plan is agreed or the goal worked on:"
        f" it is counseling toward a need that calls for it and {carried_by};"
        f" {_held(worker_id, member, on)}",
        subject=task.task_id,
        field=f"{path}.owner.owner_id",
        goal_id=goal_id,
        worker_id=worker_id or "",
        required_licences=",".join(COUNSELING_LICENCES),
        suggested_action="ReviseGoal",
    )


_LICENCES = ", ".join(COUNSELING_LICENCES)


def _held(worker_id: str | None, member: StaffMember | None, on: date) -> str:
    """What planning knows of the worker's licence (``on``: the day it must be valid)."""
    worker = worker_id or "(none: the case has no worker)"
    if member is None:
        return (
            f"planning knows no credentials of worker {worker} (it learns them from the case"
            " assignments coordination records)"
        )
    return f"worker {worker} ({member.role.value}) holds none valid on {on.isoformat()}"
