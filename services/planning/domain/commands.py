"""What the planning service can be asked to do, with every value already validated.

Commands hold catalog value objects (``Goal``, ``GoalProgress``, ...) so that the decisions only
check business rules; shape and format problems were refused when the command was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from events.catalog.cases import DischargeReason
from events.catalog.monitoring import ContactKind, GoalProgress
from events.catalog.planning import Goal


@dataclass(frozen=True, slots=True)
class DraftPlan:
    case_id: str
    plan_id: str
    goals: tuple[Goal, ...]


@dataclass(frozen=True, slots=True)
class AddGoal:
    case_id: str
    goal: Goal


@dataclass(frozen=True, slots=True)
class ReviseGoal:
    case_id: str
    goal: Goal
    reason: str


@dataclass(frozen=True, slots=True)
class AchieveGoal:
    case_id: str
    goal_id: str
    evidence: str | None


@dataclass(frozen=True, slots=True)
class DropGoal:
    case_id: str
    goal_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RecordAgreement:
    case_id: str
    plan_version: int | None
    """The version the client was shown; ``None`` agrees to the current one."""
    client_statement: str | None
    signed_by_client: bool


@dataclass(frozen=True, slots=True)
class LogContact:
    case_id: str
    contact_id: str
    kind: ContactKind
    summary: str
    next_follow_up_due: date | None


@dataclass(frozen=True, slots=True)
class EvaluateProgress:
    case_id: str
    evaluation_id: str
    goal_progress: tuple[GoalProgress, ...]
    helping_factors: tuple[str, ...]
    hindering_factors: tuple[str, ...]
    plan_adjustment_needed: bool


@dataclass(frozen=True, slots=True)
class PlanDischarge:
    case_id: str
    target_date: date
    criteria: tuple[str, ...]
    aftercare: tuple[str, ...]
    long_term_maintenance: bool
    note: str | None


@dataclass(frozen=True, slots=True)
class CloseCase:
    case_id: str
    reason: DischargeReason
    note: str | None


Command = (
    DraftPlan
    | AddGoal
    | ReviseGoal
    | AchieveGoal
    | DropGoal
    | RecordAgreement
    | LogContact
    | EvaluateProgress
    | PlanDischarge
    | CloseCase
)
