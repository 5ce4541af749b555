"""Who is who in the demo case, its calendar, and what is planned and scheduled for Marco."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import Person


def _provider(organisation: str) -> Person:
    """A partner agency acting through its own account (its agency is itself)."""
    return Person(organisation, "partner_agency", agency=organisation)


RECEPTIONIST = Person("lena.fischer", "receptionist")
INTAKE_WORKER = Person("paolo.ricci", "intake_worker")
COORDINATOR = Person("maria.santos", "coordinator")
# The social worker's user id is her worker id at the agency (example agency of coordination):
# planning lets the assigned worker, and only her, act on the case.
SOCIAL_WORKER = Person("sw-amara-okafor", "social_worker")
CASE_MANAGER_ID = "cm-dana-reyes"
AUDITOR = Person("james.liu", "auditor")
HOME_CARE = _provider("sunrise-home-care")
PARATRANSIT = _provider("eastbay-paratransit")
PHYSIO = _provider("eastside-pt")
SENIOR_CENTRE = Person(
    "fruitvale-senior-centre", "partner_agency", agency="fruitvale-senior-centre"
)

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


STORY_DAYS = 14
"""Day 0, Marco leaves hospital, to day 14, the case closes."""


@dataclass(frozen=True)
class Story:
    """The story's calendar: day 0 is the day Marco leaves hospital.

    Commands state when they happened (``CommandContext.occurred_at``), so the two weeks of the
    case can be told in a few seconds; the case closes on day 14, yesterday, so that nothing is
    stated as happening in the future.
    """

    day0: date

    @classmethod
    def ending_yesterday(cls) -> Story:
        return cls(datetime.now(UTC).date() - timedelta(days=STORY_DAYS + 1))

    def at(self, day: int, clock: str) -> datetime:
        hours, minutes = (int(part) for part in clock.split(":"))
        return datetime.combine(self.day0 + timedelta(days=day), time(hours, minutes), UTC)

    def date(self, day: int) -> str:
        return (self.day0 + timedelta(days=day)).isoformat()

    def show(self, moment: datetime) -> str:
        moment = moment.astimezone(UTC)
        return f"day {(moment.date() - self.day0).days:>2} {moment:%H:%M}"


@dataclass(frozen=True)
class Goal:
    need: str
    term: str
    statement: str
    task: str


GOALS = (
    Goal("home_care", "short", "Marco washes and dresses safely every morning", "Aide starts"),
    Goal("physical_therapy", "long", "Marco walks to the café with a cane", "Twice-weekly PT"),
    Goal("transportation", "short", "Marco gets to every therapy session", "Book paratransit"),
    Goal("counseling", "short", "Marco comes to terms with his changed body", "Weekly talks"),
    Goal("socialisation", "long", "Marco meets people his age every week", "Visit the centre"),
)


@dataclass(frozen=True)
class Referral:
    need: str
    partner: Person
    service: str
    urgency: str


REFERRALS = (
    Referral(
        "physical_therapy", PHYSIO, "Post-surgical hip rehabilitation, twice weekly", "urgent"
    ),
    Referral("socialisation", SENIOR_CENTRE, "Weekly lunch and activities for seniors", "routine"),
)


@dataclass(frozen=True)
class Slot:
    name: str
    kind: str
    partner: Person
    day: int
    start: str
    end: str
    location: str


COUNSELING_CLASH = Slot(
    "counseling-clash", "counseling", SOCIAL_WORKER, 3, "14:30", "15:30", "client_home"
)
"""What Marco first asks for: counseling right when he is at physical therapy."""

SCHEDULE = (
    Slot("home-care", "home_care", HOME_CARE, 2, "08:00", "10:00", "client_home"),
    Slot("transport", "transportation", PARATRANSIT, 3, "13:15", "13:50", "other"),
    Slot("physical-therapy", "physical_therapy", PHYSIO, 3, "14:00", "15:00", "provider_site"),
    COUNSELING_CLASH,
    Slot("counseling", "counseling", SOCIAL_WORKER, 4, "10:00", "11:00", "client_home"),
    Slot("socialisation", "socialisation", SENIOR_CENTRE, 6, "11:00", "14:00", "provider_site"),
    Slot("physical-therapy-2", "physical_therapy", PHYSIO, 15, "14:00", "15:00", "provider_site"),
)


@dataclass(frozen=True)
class Delivery:
    slot: str
    partner: Person
    day: int
    clock: str
    note: str


DELIVERIES = (
    Delivery("home-care", HOME_CARE, 2, "10:05", "Morning care; grab rails needed in the bathroom"),
    Delivery("transport", PARATRANSIT, 3, "13:55", "Wheelchair-accessible van, on time"),
    Delivery("physical-therapy", PHYSIO, 3, "15:05", "Gait training; walked 50 m with a frame"),
    Delivery("counseling", SOCIAL_WORKER, 4, "11:05", "Talked about losing his independence"),
    Delivery("socialisation", SENIOR_CENTRE, 6, "14:05", "Played scopa with two other Italians"),
)
PROGRESS = (
    ("home_care", "on_track"),
    ("physical_therapy", "some_progress"),
    ("transportation", "achieved"),
    ("counseling", "some_progress"),
    ("socialisation", "on_track"),
)

ACHIEVEMENTS = (
    ("home_care", "Washes and dresses every morning, the aide only helping"),
    ("physical_therapy", "Walked to the café with a cane on day 9"),
    ("transportation", "Got to every therapy session by paratransit"),
    ("counseling", "Says the cane no longer shames him"),
    ("socialisation", "Lunches with friends at the senior centre every week"),
)
"""What shows each goal of the plan Marco agreed to achieved, before the case is closed with
reason goals_achieved (which needs every goal achieved or dropped)."""


def slot(name: str) -> Slot:
    return next(s for s in SCHEDULE if s.name == name)


def marco() -> intake_pb2.RegisterClientRequest:
    """Marco's registration, without its context."""
    return intake_pb2.RegisterClientRequest(
        name=intake_pb2.PersonName(given_names="Marco", family_name="Bellini"),
        date_of_birth="1941-06-02",
        identifiers=[
            intake_pb2.PersonalIdentifier(scheme="mrn:st-mary-hospital", value="SM-448213")
        ],
        contact=intake_pb2.ContactDetails(
            phone="+1 510 555 0199", postal_address="2150 Fruitvale Ave, Oakland"
        ),
        preferred_language="it",
    )


def assessed_needs() -> list[intake_pb2.AssessedNeed]:
    return [
        intake_pb2.AssessedNeed(category="home_care", urgency="immediate"),
        intake_pb2.AssessedNeed(category="physical_therapy", urgency="urgent"),
        intake_pb2.AssessedNeed(category="transportation", urgency="soon"),
        intake_pb2.AssessedNeed(
            category="counseling", urgency="soon", description="Adjusting to his altered body"
        ),
        intake_pb2.AssessedNeed(category="socialisation", urgency="routine"),
    ]


def provider(partner: Person) -> co.Provider:
    return co.Provider(provider_id=partner.user_id, name=PROVIDERS[partner.user_id])


def plan_goal(goal: Goal, story: Story) -> pl.Goal:
    return pl.Goal(
        statement=goal.statement,
        term=goal.term,
        need_category=goal.need,
        objectives=[goal.statement],
        tasks=[
            pl.Task(
                description=goal.task,
                owner=pl.TaskOwner(kind="worker", owner_id=SOCIAL_WORKER.user_id),
                target_date=story.date(7),
            )
        ],
    )
