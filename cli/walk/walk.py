"""The state of a walk through the case, what it collected, and how it speaks."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import uuid4

from casetrail.audit.v1 import audit_pb2
from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.planning.v1 import planning_pb2 as pl
from cli.present import shown
from cli.rpc import Connection, Person, Refusal, Stubs, command, eventually, query
from cli.walk.story import COORDINATOR, Story

DETAIL_WIDTH = 76
"""Detail lines are indented under the step; wrapped, the output stays within 100 columns."""


@dataclass
class WalkResult:
    """What the services answered along the way (the e2e tests assert on it)."""

    client_id: str = ""
    case_id: str = ""
    assessment_id: str = ""
    duplicate_refusal: Refusal | None = None
    open_case_retry_identical: bool = False
    case_manager_refusal: Refusal | None = None
    assignment: co.AssignCaseResponse | None = None
    eligibility: co.DetermineEligibilityResponse | None = None
    plan: pl.DraftPlanResponse | None = None
    goal_ids: dict[str, str] = field(default_factory=dict)
    referral_ids: dict[str, str] = field(default_factory=dict)
    service_ids: dict[str, str] = field(default_factory=dict)
    schedule_conflict: Refusal | None = None
    reservation: co.ReserveBudgetResponse | None = None
    closure_refusal: Refusal | None = None
    case_view: pl.GetCaseViewResponse | None = None
    activities: list[audit_pb2.Activity] = field(default_factory=list)
    timeline: list[audit_pb2.TimelineEntry] = field(default_factory=list)


class Walk:
    """One walk: the stubs, the story's clock, and the result so far.

    ``when(day, clock)`` moves the story's clock; the commands sent afterwards state that moment
    as when they happened, and the lines printed show it.
    """

    def __init__(
        self,
        connection: Connection,
        say: Callable[[str], None] = print,
        *,
        story: Story | None = None,
        patience: float = 30.0,
        run_id: str = "",
    ) -> None:
        self.connection = connection
        self.say = say
        self.story = story or Story.ending_yesterday()
        self.patience = patience
        self.run_id = run_id or uuid4().hex[:8]
        self.result = WalkResult()
        self.moment = self.story.at(0, "00:00")

    @property
    def case_id(self) -> str:
        return self.result.case_id

    def when(self, day: int, clock: str) -> None:
        self.moment = self.story.at(day, clock)

    def as_(self, person: Person) -> Stubs:
        """The services' stubs, called as ``person`` (with their bearer token)."""
        return self.connection.as_(person)

    def command(self, step: str) -> common_pb2.CommandContext:
        """A context whose key is unique to this walk and step, so resending it is a retry."""
        return command(f"demo-{self.run_id}-{step}", self.moment)

    def line(self, person: Person, text: str) -> None:
        """A step, its ``text`` shown escaped (it quotes the services' answers)."""
        self.say(f"{self.story.show(self.moment)}  {person.role:<14} {shown(text)}")

    def detail(self, text: str) -> None:
        for part in textwrap.wrap(
            shown(text), width=DETAIL_WIDTH, subsequent_indent="  ", break_on_hyphens=False
        ):
            self.say(f"{'':<24}{part}")

    def section(self, title: str) -> None:
        self.say(f"\n== {title}")

    def show(self, moment: datetime) -> str:
        return self.story.show(moment)

    async def view(
        self, ready: Callable[[pl.GetCaseViewResponse], bool], what: str
    ) -> pl.GetCaseViewResponse:
        """Planning's case view once it shows what was just done elsewhere."""
        request = pl.GetCaseViewRequest(context=query("coordination"), case_id=self.case_id)
        return await eventually(
            lambda: self.as_(COORDINATOR).planning.GetCaseView(request),
            ready,
            what=what,
            patience=self.patience,
        )
