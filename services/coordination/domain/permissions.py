"""Which roles may do what in coordination."""

from __future__ import annotations

from enum import StrEnum

from casetrail_platform.commands import NotAllowed
from events.catalog.assignment import CASE_CARRYING_ROLES
from events.catalog.base import Role
from events.envelope import Actor


class Action(StrEnum):
    ASSIGN_CASE = "assign a case"
    TRANSFER_CASE = "transfer a case to another worker"
    MAKE_REFERRAL = "refer a client"
    ANSWER_REFERRAL = "accept, decline or complete a referral"
    WITHDRAW_REFERRAL = "withdraw a referral"
    SCHEDULE_SERVICE = "schedule or reschedule a service"
    CANCEL_SERVICE = "cancel a service"
    RECORD_DELIVERY = "record that a service was delivered"
    DETERMINE_ELIGIBILITY = "determine eligibility for a programme"
    RESERVE_BUDGET = "reserve or release agency budget"
    HANDLE_CLAIM = "file an insurance claim or record its decision"
    READ = "read coordination records"


_WORKERS = frozenset({Role.COORDINATOR, Role.CASE_MANAGER, Role.SOCIAL_WORKER})
_DECIDERS = frozenset({Role.COORDINATOR, Role.SUPERVISOR})

ALLOWED: dict[Action, frozenset[Role]] = {
    # The coordinator assigns but never carries the case; a supervisor may step in.
    Action.ASSIGN_CASE: _DECIDERS,
    Action.TRANSFER_CASE: _DECIDERS,
    Action.MAKE_REFERRAL: _WORKERS,
    # Only the agency that received the referral answers it.
    Action.ANSWER_REFERRAL: frozenset({Role.PARTNER_AGENCY}),
    # The agency calls off its own referral: the coordinator on any case, a case-carrying
    # worker only on the case they carry (``require_case_worker``).
    Action.WITHDRAW_REFERRAL: frozenset({Role.COORDINATOR}) | CASE_CARRYING_ROLES,
    Action.SCHEDULE_SERVICE: _WORKERS,
    Action.CANCEL_SERVICE: _WORKERS | {Role.PARTNER_AGENCY},
    Action.RECORD_DELIVERY: _WORKERS | {Role.PARTNER_AGENCY},
    Action.DETERMINE_ELIGIBILITY: _WORKERS,
    # Agency money is committed by those accountable for the budget: a supervisor for the
    # cases of their team only (``app.handlers.carriers.CaseSupervisor``, on coordination's
    # case stream).
    Action.RESERVE_BUDGET: _DECIDERS,
    Action.HANDLE_CLAIM: frozenset({Role.COORDINATOR, Role.CASE_MANAGER}),
    Action.READ: _WORKERS | {Role.SUPERVISOR, Role.AUDITOR},
}


def allows(role: Role, action: Action) -> bool:
    return role in ALLOWED[action]


def require_role(role: Role, action: Action) -> None:
    if not allows(role, action):
        raise NotAllowed(role.value, action.value)


def require_case_worker(actor: Actor, action: Action, worker_id: str | None) -> None:
    """A case-carrying worker does ``action`` only on the case assigned to them (``worker_id``:
    the case's worker, as coordination's case stream tells it); the other roles ``ALLOWED`` it
    do it on any case."""
    require_role(actor.role, action)
    if actor.role in CASE_CARRYING_ROLES and worker_id != actor.user_id:
        raise NotAllowed(actor.role.value, f"{action.value} on a case not assigned to them")


class NotTheProvider(NotAllowed):
    """A partner agency acting on another provider's referral or service (PERMISSION_DENIED)."""

    reason = "NOT_THE_PROVIDER"


def require_own_provider(acting_for: str | None, provider_id: str | None, what: str) -> None:
    """A partner agency (``acting_for``: the agency of its verified token; ``None`` for the
    agency's own staff) acts only on referrals and services addressed to it: the provider
    named in a request is no credential. ``provider_id`` ``None``: no such referral or service
    (or case), refused alike, so that a partner does not learn which ids are real."""
    if acting_for is not None and acting_for != provider_id:
        raise NotTheProvider(
            Role.PARTNER_AGENCY.value,
            f"act on {what}",
            f"{what} is not addressed to agency {acting_for}",
        )
