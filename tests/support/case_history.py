"""Case events as three services' stores (intake, coordination, planning) would hand them to
their relays: each stream's sequences and each store's positions counted as they would be. For
the caseload processor's tests, unit and integration alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import uuid4

from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import (
    CaseClosed,
    CaseOpened,
    CaseReopened,
    DischargeReason,
    PresentingNeed,
    ReferralSource,
    ReferralSourceKind,
)
from events.catalog.monitoring import ContactKind, ContactLogged
from events.catalog.values import NeedCategory
from events.envelope import Actor, EventMetadata, RecordedEvent

COORDINATOR = Actor("coord-lee", Role.COORDINATOR)
INTAKE = Actor("intake-kim", Role.INTAKE_WORKER)


@dataclass
class History:
    """Recorded events as three services' stores would hand them to their relays."""

    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)

    def record(
        self, source: str, event: CaseEvent, actor: Actor, occurred_at: datetime
    ) -> RecordedEvent:
        stream = f"case-{event.subject}"
        sequence = self.versions.get((source, stream), 0) + 1
        position = self.positions.get(source, 0) + 1
        self.versions[(source, stream)] = sequence
        self.positions[source] = position
        return RecordedEvent(
            event_id=uuid4(),
            stream=stream,
            sequence=sequence,
            position=position,
            recorded_at=occurred_at,
            event=event,
            metadata=EventMetadata(
                source=source,
                actor=actor,
                occurred_at=occurred_at,
                correlation_id=uuid4(),
            ),
        )

    def opened(self, case_id: str, at: datetime) -> RecordedEvent:
        event = CaseOpened(
            case_id=case_id,
            client_id=f"client-{case_id}",
            referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
            presenting_needs=(PresentingNeed(category=NeedCategory.HOME_CARE),),
        )
        return self.record("casetrail/intake", event, INTAKE, at)

    def closed(self, case_id: str, at: datetime) -> RecordedEvent:
        event = CaseClosed(case_id=case_id, reason=DischargeReason.GOALS_ACHIEVED)
        return self.record("casetrail/intake", event, INTAKE, at)

    def reopened(self, case_id: str, at: datetime) -> RecordedEvent:
        event = CaseReopened(case_id=case_id, reason="Fell again, needs home care")
        return self.record("casetrail/intake", event, INTAKE, at)

    def assigned(self, case_id: str, worker: str, at: datetime) -> RecordedEvent:
        event = CaseAssigned(
            case_id=case_id, worker_id=worker, worker_role=Role.CASE_MANAGER, reason="fits"
        )
        return self.record("casetrail/coordination", event, COORDINATOR, at)

    def reassigned(self, case_id: str, old: str, new: str, at: datetime) -> RecordedEvent:
        event = CaseReassigned(
            case_id=case_id,
            previous_worker_id=old,
            worker_id=new,
            worker_role=Role.SOCIAL_WORKER,
            reason="leave",
        )
        return self.record("casetrail/coordination", event, COORDINATOR, at)

    def contact(self, case_id: str, worker: str, at: datetime, due: date | None) -> RecordedEvent:
        event = ContactLogged(
            case_id=case_id,
            contact_id=f"contact-{uuid4().hex[:8]}",
            kind=ContactKind.PHONE_CALL,
            summary="Checked in by phone",
            next_follow_up_due=due,
        )
        return self.record("casetrail/planning", event, Actor(worker, Role.CASE_MANAGER), at)
