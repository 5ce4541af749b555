"""The elderly client leaving hospital, walked from intake to closure through the four APIs.

Marco Bellini, 85, lives alone and is discharged from St Mary's Hospital after a hip fracture.
He needs home care, counseling to adjust to his altered physical state, transport to his
appointments, physical therapy and company. The story runs over two weeks (each command states
when it happened) and ends with the case view and the audit trail.

``make demo`` talks to the services ``make run`` started (var/data/addresses.json), to the
addresses given with --intake/--coordination/--planning/--audit, or, with --embedded, starts all
four in this process on free ports with a temporary data directory. Every step is a method of
``CaseWalk`` returning what the services answered, so tests/e2e walk the same case and assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from uuid import uuid4

from casetrail.audit.v1 import audit_pb2
from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.present import activity_lines, case_view_lines, short
from cli.rpc import (
    SERVICES,
    Person,
    Refusal,
    Stubs,
    UnexpectedSuccess,
    connect,
    eventually,
    load_addresses,
    refused,
    timestamp,
)

RECEPTIONIST = Person("lena.fischer", "receptionist")
INTAKE_WORKER = Person("paolo.ricci", "intake_worker")
COORDINATOR = Person("maria.santos", "coordinator")
SOCIAL_WORKER = Person("sw-amara-okafor", "social_worker")  # her worker id at the agency
CASE_MANAGER_ID = "cm-dana-reyes"
AUDITOR = Person("james.liu", "auditor")
HOME_CARE = Person("sunrise-home-care", "partner_agency")
PARATRANSIT = Person("eastbay-paratransit", "partner_agency")
PHYSIO = Person("eastside-pt", "partner_agency")
SENIOR_CENTRE = Person("fruitvale-senior-centre", "partner_agency")

PROVIDERS = {
    HOME_CARE.user_id: "Sunrise Home Care",
    PARATRANSIT.user_id: "East Bay Paratransit",
    PHYSIO.user_id: "Eastside Physical Therapy",
    SENIOR_CENTRE.user_id: "Fruitvale Senior Centre",
    SOCIAL_WORKER.user_id: "Amara Okafor, LCSW",
}
NEEDS = ("home_care", "physical_therapy", "transportation", "counseling", "socialisation")
HOME_CARE_PROGRAM = "home-care-medicaid-waiver"
HOME_CARE_BUDGET = "home-care-fy2025"


@dataclass(frozen=True)
class Story:
    """The story's calendar: day 0 is the day Marco leaves hospital, two weeks ago."""

    day0: date

    @classmethod
    def ending_today(cls) -> Story:
        # Day 14 is today; its steps happen in the early morning so that none is in the future.
        return cls(datetime.now(UTC).date() - timedelta(days=14))

    def at(self, day: int, clock: str) -> datetime:
        hours, minutes = (int(part) for part in clock.split(":"))
        return datetime.combine(self.day0 + timedelta(days=day), time(hours, minutes), UTC)

    def show(self, moment: datetime) -> str:
        moment = moment.astimezone(UTC)
        return f"day {(moment.date() - self.day0).days:>2} {moment:%H:%M}"


@dataclass
class WalkResult:
    """What the services answered along the way (the tests assert on it)."""

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
    case_view: pl.CaseView | None = None
    activities: list[audit_pb2.Activity] = field(default_factory=list)
    timeline: list[audit_pb2.TimelineEntry] = field(default_factory=list)


class CaseWalk:
    def __init__(
        self,
        stubs: Stubs,
        say: Callable[[str], None] = print,
        *,
        story: Story | None = None,
        timeout: float = 30.0,
        run_id: str = "",
    ) -> None:
        self.stubs = stubs
        self.say = say
        self.story = story or Story.ending_today()
        self.timeout = timeout
        self.run_id = run_id or uuid4().hex[:8]
        self.result = WalkResult()

    async def run(self) -> WalkResult:
        await self.intake()
        await self.assignment()
        await self.eligibility()
        await self.planning()
        await self.referrals()
        await self.scheduling()
        await self.funding()
        await self.monitoring()
        await self.closure()
        await self.review()
        return self.result

    # -- helpers ------------------------------------------------------------------------------

    def key(self, step: str) -> str:
        return f"demo-{self.run_id}-{step}"

    def ctx(self, person: Person, step: str, day: int, clock: str) -> common_pb2.CommandContext:
        return person.command(self.key(step), self.story.at(day, clock))

    def line(self, day: int, clock: str, person: Person, text: str) -> None:
        self.say(f"{self.story.show(self.story.at(day, clock))}  {person.role:<14} {text}")

    def detail(self, text: str) -> None:
        self.say(f"{'':<26}{text}")

    def section(self, title: str) -> None:
        self.say(f"\n== {title}")

    @property
    def case_id(self) -> str:
        return self.result.case_id

    async def view(self, ready: Callable[[pl.CaseView], bool], what: str) -> pl.CaseView:
        request = pl.GetCaseViewRequest(
            context=COORDINATOR.query("coordination"), case_id=self.case_id
        )
        return await eventually(
            lambda: self.stubs.planning.GetCaseView(request), ready, what=what, timeout=self.timeout
        )

    # -- the case -----------------------------------------------------------------------------

    async def intake(self) -> None:
        self.section("Intake: St Mary's Hospital refers Marco Bellini on the day he is discharged")
        intake = self.stubs.intake
        found = await intake.FindPossibleDuplicates(
            intake_pb2.FindPossibleDuplicatesRequest(
                context=RECEPTIONIST.query("direct_care"),
                name=_marco().name,
                date_of_birth=_marco().date_of_birth,
                identifiers=_marco().identifiers,
            )
        )
        if found.candidates:
            self.result.client_id = found.candidates[0].client_id
            self.line(0, "09:00", RECEPTIONIST, f"found Marco's record: client {short(self.result.client_id)}")
        else:
            request = _marco()
            request.context.CopyFrom(RECEPTIONIST.command(self.key("register"), self.story.at(0, "09:00")))
            registered = await intake.RegisterClient(request)
            self.result.client_id = registered.client_id
            self.line(0, "09:00", RECEPTIONIST, f"registered Marco Bellini (born 1941-06-02): client {short(registered.client_id)}")

        again = _marco()
        again.context.CopyFrom(RECEPTIONIST.command(self.key("register-again"), self.story.at(0, "09:05")))
        refusal = await refused(intake.RegisterClient(again))
        self.result.duplicate_refusal = refusal
        candidates = refusal.details(intake_pb2.PossibleDuplicates)
        ids = [short(c.client_id) for d in candidates for c in d.candidates]
        self.line(0, "09:05", RECEPTIONIST, f"registering him again is refused: {refusal.code.name} (possible duplicate of {', '.join(ids)})")

        opening = intake_pb2.OpenCaseRequest(
            context=RECEPTIONIST.command(self.key("open"), self.story.at(0, "09:10")),
            client_id=self.result.client_id,
            referral_source=intake_pb2.ReferralSource(kind="hospital", name="St Mary's Hospital, discharge planner Ruth Alvarez"),
            presenting_needs=[
                intake_pb2.PresentingNeed(category="home_care", description="Cannot wash or dress alone after hip surgery"),
                intake_pb2.PresentingNeed(category="physical_therapy", description="Hip rehabilitation prescribed at discharge"),
                intake_pb2.PresentingNeed(category="transportation", description="May not drive for three months"),
            ],
        )
        opened = await intake.OpenCase(opening)
        retried = await intake.OpenCase(opening)  # a network retry: same key, same answer
        self.result.case_id = opened.result.case_id
        self.result.open_case_retry_identical = retried == opened
        self.line(0, "09:10", RECEPTIONIST, f"opened case {short(self.case_id)} (referral: hospital discharge planner)")
        self.detail(f"retried with the same idempotency key: {'same case, nothing new written' if retried == opened else 'DIFFERENT ANSWER'}")

        assessed = await intake.RecordInitialAssessment(
            intake_pb2.RecordInitialAssessmentRequest(
                context=INTAKE_WORKER.command(self.key("assess"), self.story.at(0, "11:00")),
                case_id=self.case_id,
                factors=intake_pb2.AssessmentFactors(
                    biological="Hip fracture repaired; walks a few steps with a frame",
                    psychological="Low mood, afraid of falling again, grieving his independence",
                    social="Widowed, lives alone on the second floor; daughter visits at weekends",
                    economic="State pension of 1,850 USD a month, no savings",
                    cultural="Italian-born, prefers to speak Italian",
                ),
                strengths=["Motivated to walk to the café again", "Close to his daughter Chiara"],
                resources=["State pension", "Medicare", "A neighbour who shops for him"],
                risks=[
                    intake_pb2.Risk(description="Falls at home", severity="high"),
                    intake_pb2.Risk(description="Isolation and low mood", severity="moderate"),
                ],
                needs=[
                    intake_pb2.AssessedNeed(category="home_care", urgency="immediate"),
                    intake_pb2.AssessedNeed(category="physical_therapy", urgency="urgent"),
                    intake_pb2.AssessedNeed(category="transportation", urgency="soon"),
                    intake_pb2.AssessedNeed(category="counseling", urgency="soon", description="Adjusting to an altered physical state"),
                    intake_pb2.AssessedNeed(category="socialisation", urgency="routine"),
                ],
            )
        )
        self.result.assessment_id = assessed.assessment_id
        self.line(0, "11:00", INTAKE_WORKER, "recorded the initial assessment: " + ", ".join(NEEDS))
        self.detail("strengths: motivated, close to his daughter; risks: falls (high), isolation (moderate)")
