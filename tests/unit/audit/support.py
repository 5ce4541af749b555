"""Case events as the bus delivers them to audit: recorded by other services, both clocks set
(a case's, its client's own); and the query context a viewer of audit's API reads with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from casetrail.common.v1 import common_pb2
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.queries import QueryContext
from cli.rpc import Person
from events.catalog.access import AccessPurpose
from events.catalog.assessment import AssessedNeed, AssessmentFactors, InitialAssessmentRecorded
from events.catalog.assignment import CaseAssigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import (
    CaseClosed,
    CaseOpened,
    DischargeReason,
    PresentingNeed,
    ReferralSource,
    ReferralSourceKind,
)
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered, PersonName
from events.catalog.erasure import RetentionHoldPlaced, RetentionHoldReleased
from events.catalog.values import NeedCategory, Urgency
from events.envelope import Actor, EventMetadata, RecordedEvent
from tests.support.identity import acting

CASE = "case-0042"
DAY = timedelta(days=1)
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

INTAKE_WORKER = Actor("intake-ivy", Role.INTAKE_WORKER)
COORDINATOR = Actor("coord-carla", Role.COORDINATOR)
AUDITOR = QueryContext(Actor("auditor-kim", Role.AUDITOR), AccessPurpose.CONFIDENTIALITY_REVIEW)
SUPERVISOR = QueryContext(Actor("super-sam", Role.SUPERVISOR), AccessPurpose.SUPERVISION)
TEAM = "team-east"
"""The assigned worker's team, which super-sam supervises."""
SUPERVISING = Principal("super-sam", Role.SUPERVISOR, DEFAULT_HOME_AGENCY, "test", team=TEAM)
CASE_MANAGER = QueryContext(Actor("worker-luca", Role.CASE_MANAGER), AccessPurpose.DIRECT_CARE)


@dataclass
class Producer:
    """One stream of another service: hands out sequences and positions like its store."""

    source: str
    stream: str
    sequence: int = 0
    positions: list[int] = field(default_factory=list)

    def record(
        self,
        event: CaseEvent,
        *,
        occurred_at: datetime,
        recorded_at: datetime | None = None,
        actor: Actor = INTAKE_WORKER,
        event_id: UUID | None = None,
    ) -> RecordedEvent:
        self.sequence += 1
        return RecordedEvent(
            event_id=event_id or uuid4(),
            stream=self.stream,
            sequence=self.sequence,
            position=self.sequence,
            recorded_at=recorded_at or occurred_at,
            event=event,
            metadata=EventMetadata(
                source=self.source,
                actor=actor,
                occurred_at=occurred_at,
                correlation_id=uuid4(),
            ),
        )


def intake(case_id: str = CASE) -> Producer:
    return Producer("casetrail/intake", f"case-{case_id}")


def coordination(case_id: str = CASE) -> Producer:
    return Producer("casetrail/coordination", f"case-{case_id}")


def opened(case_id: str = CASE) -> CaseOpened:
    return CaseOpened(
        case_id=case_id,
        client_id="client-7f3a",
        referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
        presenting_needs=(
            PresentingNeed(category=NeedCategory.HOME_CARE, description="Lives alone after a fall"),
        ),
    )


def assessed(case_id: str = CASE) -> InitialAssessmentRecorded:
    return InitialAssessmentRecorded(
        case_id=case_id,
        assessment_id="assess-1",
        factors=AssessmentFactors(psychological="Fears falling again"),
        needs=(AssessedNeed(category=NeedCategory.HOME_CARE, urgency=Urgency.IMMEDIATE),),
    )


def assigned(case_id: str = CASE, worker_id: str = "worker-ana") -> CaseAssigned:
    return CaseAssigned(
        case_id=case_id,
        worker_id=worker_id,
        worker_role=Role.SOCIAL_WORKER,
        reason="Licensed to counsel",
        worker_team=TEAM,
    )


def closed(case_id: str = CASE) -> CaseClosed:
    return CaseClosed(case_id=case_id, reason=DischargeReason.GOALS_ACHIEVED)


def late_recorded_case(case_id: str = CASE) -> list[RecordedEvent]:
    """Opened on day 0; assigned on day 1 but only recorded on day 3; closed on day 5."""
    desk = intake(case_id)
    office = coordination(case_id)
    return [
        desk.record(opened(case_id), occurred_at=T0),
        desk.record(assessed(case_id), occurred_at=T0 + timedelta(hours=2)),
        office.record(
            assigned(case_id),
            occurred_at=T0 + DAY,
            recorded_at=T0 + 3 * DAY,
            actor=COORDINATOR,
        ),
        office.record(closed(case_id), occurred_at=T0 + 5 * DAY, actor=COORDINATOR),
    ]


def viewer(
    role: str = "auditor", purpose: str = "confidentiality_review", team: str | None = None
) -> Any:
    return acting(Person(f"user-{role}", role, team=team), common_pb2.QueryContext(purpose=purpose))


CLIENT = "client-7f3a"  # the client ``opened()`` is for


def client_history() -> list[RecordedEvent]:
    """The client's own events around the case of ``late_recorded_case`` (opened at T0): the
    registration before it, the date of birth corrected on day 2 (recorded on day 4), a hold
    placed on day 6 and released on day 7."""
    desk = Producer("casetrail/intake", f"client-{CLIENT}")
    registered = ClientRegistered(
        client_id=CLIENT, name=PersonName(given_names="Marco"), date_of_birth=date(1914, 6, 2)
    )
    corrected = ClientDateOfBirthCorrected(
        client_id=CLIENT, date_of_birth=date(1941, 6, 2), reason="birth certificate seen"
    )
    placed = RetentionHoldPlaced(client_id=CLIENT, hold_id="hold-1", legal_basis="inquiry 7")
    released = RetentionHoldReleased(client_id=CLIENT, hold_id="hold-1", reason="closed")
    return [
        desk.record(registered, occurred_at=T0 - DAY),
        desk.record(corrected, occurred_at=T0 + 2 * DAY, recorded_at=T0 + 4 * DAY),
        desk.record(placed, occurred_at=T0 + 6 * DAY),
        desk.record(released, occurred_at=T0 + 7 * DAY),
    ]
