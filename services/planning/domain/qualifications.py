"""Who may carry out a plan's tasks: a task toward a need that calls for counseling, owned by a
worker, is counseling, and only a licensed social worker may counsel (a case manager refers the
client out instead). Planning learns workers' roles and credentials from the case assignments on
the bus (``StaffMember``); the rule itself is the catalog's (``counseling_licence``), the one
coordination assigns cases by.

A need an outside provider took on (its referral accepted or completed) no longer calls for a
licence: the worker's tasks toward it are coordination, the counseling is the provider's.

A task naming no owner is whoever carries the case's, so a transfer hands it on: coordination
transfers by the case's needs, which know nothing of the plan's goals, and may hand it to a case
manager. A task naming its owner stays theirs, whose licence may lapse after the task was
planned. So the plan is not carried on (agreed to, a goal achieved or its progress evaluated)
while a counseling task's worker, named or the case's, may not counsel
(``require_carried_by_licensed_worker``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from events.catalog.assignment import COUNSELING_NEEDS, counseling_licence
from events.catalog.planning import Goal, PlanTask, TaskOwnerKind
from services.planning.domain import errors
from services.planning.domain.model import CaseFacts, StaffMember

PlacedGoal = tuple[str, Goal]
"""A goal of a command with the path of its request field (``goals[0]``, ``goal``)."""


def counseling_tasks(
    goals: Iterable[PlacedGoal], facts: CaseFacts
) -> list[tuple[str, PlanTask, str | None]]:
    """The tasks of ``goals`` that are counseling by a worker: each with its field path and
    the worker who is to carry it out (the case's worker when the task names none)."""
    found = []
    for path, goal in goals:
        if goal.need_category not in COUNSELING_NEEDS or goal.need_category in facts.referred_needs:
            continue
        for index, task in enumerate(goal.tasks):
            if task.owner.kind is TaskOwnerKind.WORKER:
                worker_id = task.owner.owner_id or facts.worker_id
                found.append((f"{path}.tasks[{index}]", task, worker_id))
    return found


def task_workers(goals: Iterable[PlacedGoal], facts: CaseFacts) -> set[str]:
    """The workers whose credentials deciding on ``goals`` needs."""
    return {worker for _, _, worker in counseling_tasks(goals, facts) if worker is not None}


def require_qualified_owners(
    goals: Iterable[PlacedGoal],
    facts: CaseFacts,
    staff: Mapping[str, StaffMember],
    day: date | None = None,
) -> None:
    """Refuse the first counseling task whose worker holds no counseling licence valid on the
    task's target date, nor, for a target date before ``day`` (the command's), on ``day``
    (or whose credentials planning has not learned). A plan's task is still to be carried
    out: dated in the past, its licence's past would let a lapsed licence plan counseling.
    Licences run until a date, so one valid on the later day is valid on the earlier too."""
    for path, task, worker_id in counseling_tasks(goals, facts):
        member = None if worker_id is None else staff.get(worker_id)
        on = _licence_day(task, day)
        if not _may_counsel(member, on):
            raise errors.counseling_requires_licence(path, task, worker_id, member, on)


def require_carried_by_licensed_worker(
    goals: Iterable[Goal],
    facts: CaseFacts,
    staff: Mapping[str, StaffMember],
    day: date | None = None,
) -> None:
    """Refuse carrying on ``goals`` (the plan's, as they stand) while one holds a counseling
    task whose worker, the one it names or else the case's, holds no licence valid as
    ``require_qualified_owners`` asks (or is unknown to planning): the goal's task is to be
    given to a licensed social worker first (``ReviseGoal``, the path being that request's
    field) or the need referred out. A task naming its owner stays theirs through a transfer,
    and is checked on them: a licence valid when the task was planned may have lapsed since."""
    for goal in goals:
        for path, task, worker_id in counseling_tasks([("goal", goal)], facts):
            member = None if worker_id is None else staff.get(worker_id)
            on = _licence_day(task, day)
            if not _may_counsel(member, on):
                raise errors.counseling_carried_by_unlicensed_worker(
                    goal.goal_id, path, task, worker_id, member, on
                )


def _licence_day(task: PlanTask, day: date | None) -> date:
    return task.target_date if day is None else max(task.target_date, day)


def _may_counsel(member: StaffMember | None, on: date) -> bool:
    return (
        member is not None and counseling_licence(member.role, member.credentials, on) is not None
    )
