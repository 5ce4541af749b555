"""The intervention plan, built with the client: goals, objectives and the steps to reach them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Sensitive
from events.catalog.values import (
    CatalogValue,
    Day,
    PositiveVersion,
    SensitiveNeedCategory,
    SensitiveNote,
    require_unique,
)


class GoalTerm(StrEnum):
    """Whether a goal is for the next weeks or months (short) or beyond (long)."""

    SHORT = "short"
    LONG = "long"


class TaskOwnerKind(StrEnum):
    """Who is responsible for carrying out a task."""

    CLIENT = "client"
    WORKER = "worker"
    PROVIDER = "provider"
    FAMILY = "family"
    OTHER = "other"


class TaskOwner(CatalogValue):
    """The person or organisation that carries out a task, with their id when they have one."""

    kind: TaskOwnerKind
    owner_id: Identifier | None = None


class PlanTask(CatalogValue):
    """A concrete step toward a goal, e.g. "book transport to the Tuesday appointments"."""

    task_id: Identifier
    description: Annotated[NonEmptyStr, Sensitive] = Field(
        description="Sensitive: a step toward a goal tells of the client's need, as the goal's"
        " statement does."
    )
    owner: TaskOwner
    target_date: Day


class Goal(CatalogValue):
    """A goal of the plan, in the words agreed with the client, and how it will be reached."""

    goal_id: Identifier
    statement: SensitiveNote
    term: GoalTerm
    need_category: SensitiveNeedCategory
    objectives: tuple[SensitiveNote, ...] = Field(
        default=(), description="Measurable results that show the goal is being reached."
    )
    tasks: tuple[PlanTask, ...] = ()

    @field_validator("tasks")
    @classmethod
    def _task_ids_are_unique(cls, tasks: tuple[PlanTask, ...]) -> tuple[PlanTask, ...]:
        require_unique((task.task_id for task in tasks), "task_id")
        return tasks


class PlanDrafted(CaseEvent):
    """A draft intervention plan was written for the case, possibly with its first goals."""

    event_type: ClassVar[str] = "casetrail.plan.drafted"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    plan_id: Identifier
    goals: tuple[Goal, ...] = ()

    @field_validator("goals")
    @classmethod
    def _goal_ids_are_unique(cls, goals: tuple[Goal, ...]) -> tuple[Goal, ...]:
        require_unique((goal.goal_id for goal in goals), "goal_id")
        return goals


class GoalAdded(CaseEvent):
    """A goal was added to the plan."""

    event_type: ClassVar[str] = "casetrail.goal.added"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    plan_id: Identifier
    goal: Goal


class GoalRevised(CaseEvent):
    """A goal of the plan was revised; the event carries the goal's complete new form."""

    event_type: ClassVar[str] = "casetrail.goal.revised"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    plan_id: Identifier
    goal: Goal
    reason: Annotated[NonEmptyStr, Sensitive]


class GoalAchieved(CaseEvent):
    """The client reached a goal of the plan."""

    event_type: ClassVar[str] = "casetrail.goal.achieved"

    case_id: Identifier
    plan_id: Identifier
    goal_id: Identifier
    evidence: SensitiveNote | None = None


class GoalDropped(CaseEvent):
    """A goal was taken out of the plan without being reached."""

    event_type: ClassVar[str] = "casetrail.goal.dropped"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    plan_id: Identifier
    goal_id: Identifier
    reason: SensitiveNote


class PlanAgreed(CaseEvent):
    """The client agreed to a version of the plan; their own words are kept."""

    event_type: ClassVar[str] = "casetrail.plan.agreed"

    case_id: Identifier
    plan_id: Identifier
    plan_version: PositiveVersion = Field(
        description="Number of the plan version agreed: 1 for the first agreement, then +1."
    )
    goal_ids: Annotated[tuple[Identifier, ...], Field(min_length=1)]
    client_statement: SensitiveNote | None = None
    signed_by_client: bool

    @field_validator("goal_ids")
    @classmethod
    def _goal_ids_are_unique(cls, goal_ids: tuple[str, ...]) -> tuple[str, ...]:
        require_unique(goal_ids, "goal_ids")
        return goal_ids


PLAN_CHANGES = (PlanDrafted, GoalAdded, GoalRevised, GoalAchieved, GoalDropped, PlanAgreed)
"""The events that make or change a case's plan, agree to it or achieve or drop its goals, each
naming it (``plan_id``); a plan's evaluations only look at it. Planning dates a plan's work by
them and audit tells a plan's section by them: one list, so that a new kind of plan event is
counted by both."""

PLAN_VERSION_CHANGES = (PlanDrafted, GoalAdded, GoalRevised, GoalDropped)
"""The events that change what a plan holds, each making its next version: version 1 as
drafted, one more for each goal added, revised or dropped since, so that a version names one
content of the plan (the one the client is asked to agree to). Agreements and achievements
leave the version as it was. The versions are counted from these events, never read from a
``PlanAgreed``, which numbers the agreements themselves: planning's answers and case view and
audit's plans count them alike."""
