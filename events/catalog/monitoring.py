"""Follow-up and evaluation: is the plan working, and what helps or hinders change?"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from events.catalog.base import CaseEvent, Identifier
from events.catalog.values import CatalogValue, Day, SensitiveNote, require_unique


class ContactKind(StrEnum):
    """How a follow-up contact took place."""

    PHONE_CALL = "phone_call"
    VIDEO_CALL = "video_call"
    HOME_VISIT = "home_visit"
    OFFICE_VISIT = "office_visit"
    MESSAGE = "message"
    COLLATERAL = "collateral"
    """Contact with someone other than the client about the client (family, provider)."""


class ContactLogged(CaseEvent):
    """A follow-up contact with or about the client was logged."""

    event_type: ClassVar[str] = "casetrail.contact.logged"

    case_id: Identifier
    contact_id: Identifier
    kind: ContactKind
    summary: SensitiveNote
    next_follow_up_due: Day | None = None


class ProgressRating(StrEnum):
    """Where the client stands on a goal."""

    NOT_STARTED = "not_started"
    REGRESSED = "regressed"
    NO_CHANGE = "no_change"
    SOME_PROGRESS = "some_progress"
    ON_TRACK = "on_track"
    ACHIEVED = "achieved"


class GoalProgress(CatalogValue):
    """Progress on one goal of the plan."""

    goal_id: Identifier
    rating: ProgressRating
    note: SensitiveNote | None = None


class ProgressEvaluated(CaseEvent):
    """The client's progress on the plan was evaluated, with what helps and hinders change."""

    event_type: ClassVar[str] = "casetrail.progress.evaluated"

    case_id: Identifier
    evaluation_id: Identifier
    plan_id: Identifier
    goal_progress: Annotated[tuple[GoalProgress, ...], Field(min_length=1)]
    helping_factors: tuple[SensitiveNote, ...] = ()
    hindering_factors: tuple[SensitiveNote, ...] = ()
    plan_adjustment_needed: bool

    @field_validator("goal_progress")
    @classmethod
    def _one_entry_per_goal(cls, progress: tuple[GoalProgress, ...]) -> tuple[GoalProgress, ...]:
        require_unique((entry.goal_id for entry in progress), "goal_progress goal_id")
        return progress
