"""Who may do what in planning's commands: a role table plus "is the actor the case's assigned
worker". Reads (case views, lists) are the access policy's (``casetrail_platform.policy``).

Case-carrying workers (case managers, social workers) act only on the cases assigned to them;
the roles listed per action act on any case.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from casetrail_platform.commands import NotAllowed
from events.catalog.assignment import CASE_CARRYING_ROLES
from events.catalog.base import Role
from events.envelope import Actor


class Action(StrEnum):
    DRAFT_PLAN = "draft or revise a plan"
    RECORD_AGREEMENT = "record the client's agreement"
    LOG_CONTACT = "log a contact"
    EVALUATE_PROGRESS = "evaluate progress"
    PLAN_DISCHARGE = "plan a discharge"
    CLOSE_CASE = "close a case"


@dataclass(frozen=True, slots=True)
class Permission:
    any_case: frozenset[Role]
    """Roles that may act on any case."""
    assigned_worker: bool
    """Whether the case's assigned worker (a case-carrying role) may act on it."""


_COORDINATOR = frozenset({Role.COORDINATOR})

PERMISSIONS: dict[Action, Permission] = {
    Action.DRAFT_PLAN: Permission(_COORDINATOR, assigned_worker=True),
    Action.RECORD_AGREEMENT: Permission(frozenset(), assigned_worker=True),
    Action.LOG_CONTACT: Permission(_COORDINATOR, assigned_worker=True),
    Action.EVALUATE_PROGRESS: Permission(_COORDINATOR, assigned_worker=True),
    Action.PLAN_DISCHARGE: Permission(_COORDINATOR, assigned_worker=True),
    Action.CLOSE_CASE: Permission(
        frozenset({Role.COORDINATOR, Role.SUPERVISOR}), assigned_worker=True
    ),
}


def acts_on_any_case(actor: Actor, action: Action) -> bool:
    return actor.role in PERMISSIONS[action].any_case


def require_role(actor: Actor, action: Action) -> None:
    """Refuse roles that may never do ``action`` (checked before anything is looked up)."""
    permission = PERMISSIONS[action]
    if actor.role in permission.any_case:
        return
    if permission.assigned_worker and actor.role in CASE_CARRYING_ROLES:
        return
    raise NotAllowed(actor.role.value, action.value)


def rests_on_assignment(actor: Actor, action: Action) -> bool:
    """Whether ``actor`` may do ``action`` only as the case's assigned worker (a case-carrying
    role, not one acting on any case); a role that may never do it is refused here, before
    anything is looked up or waited for."""
    require_role(actor, action)
    return not acts_on_any_case(actor, action)


def require_assignment(actor: Actor, action: Action, assigned_worker_id: str | None) -> None:
    """Refuse a case-carrying worker acting on a case that is not assigned to them."""
    require_role(actor, action)
    if acts_on_any_case(actor, action):
        return
    if assigned_worker_id != actor.user_id:
        raise NotAllowed(actor.role.value, f"{action.value} on a case not assigned to them")
