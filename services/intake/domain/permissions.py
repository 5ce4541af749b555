"""Which roles may do what at intake (need-to-know: the assessment is sensitive)."""

from __future__ import annotations

from enum import StrEnum

from casetrail_platform.commands import NotAllowed
from events.catalog.base import Role


class Action(StrEnum):
    REGISTER_CLIENT = "register a client"
    OPEN_CASE = "open a case"
    RECORD_ASSESSMENT = "record an initial assessment"
    REOPEN_CASE = "reopen a case"
    READ_CLIENT = "read a client's record"
    READ_CASE = "read a case at intake"
    RECORD_CONSENT = "record a client's consent or its revocation"
    ERASE_CLIENT = "erase a client's sensitive data"
    HOLD_RECORDS = "place or release a legal retention hold"
    CORRECT_CLIENT = "correct a client's date of birth"


_FRONT_DESK = frozenset({Role.RECEPTIONIST, Role.INTAKE_WORKER, Role.COORDINATOR})
_CLIENT_READERS = frozenset(
    {
        Role.RECEPTIONIST,
        Role.INTAKE_WORKER,
        Role.COORDINATOR,
        Role.CASE_MANAGER,
        Role.SOCIAL_WORKER,
        Role.SUPERVISOR,
        Role.AUDITOR,
    }
)

ALLOWED: dict[Action, frozenset[Role]] = {
    Action.REGISTER_CLIENT: _FRONT_DESK,
    Action.OPEN_CASE: _FRONT_DESK,
    Action.RECORD_ASSESSMENT: frozenset(
        {Role.INTAKE_WORKER, Role.COORDINATOR, Role.SOCIAL_WORKER, Role.CASE_MANAGER}
    ),
    Action.REOPEN_CASE: frozenset({Role.COORDINATOR, Role.SUPERVISOR}),
    Action.RECORD_CONSENT: frozenset(
        {Role.INTAKE_WORKER, Role.COORDINATOR, Role.SOCIAL_WORKER, Role.CASE_MANAGER}
    ),
    # Erasure and holds are the data protection officer's, acting as supervisor.
    Action.ERASE_CLIENT: frozenset({Role.SUPERVISOR}),
    Action.HOLD_RECORDS: frozenset({Role.SUPERVISOR}),
    # Who has a part in the client's record: the policy then requires the coordinator to be
    # of the agency, the worker assigned to one of the client's cases, or that worker's
    # supervisor (``decide_client_correction``).
    Action.CORRECT_CLIENT: frozenset(
        {Role.COORDINATOR, Role.CASE_MANAGER, Role.SOCIAL_WORKER, Role.SUPERVISOR}
    ),
    Action.READ_CLIENT: _CLIENT_READERS,
    # The receptionist registers people but has no need to read their assessment.
    Action.READ_CASE: _CLIENT_READERS - {Role.RECEPTIONIST},
}


def require_role(role: Role, action: Action) -> None:
    if role not in ALLOWED[action]:
        raise NotAllowed(role.value, action.value)
