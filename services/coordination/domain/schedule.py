"""A client's services across all of their cases (the ``schedule-<client>`` stream), and the
overlap rule: the client cannot be in two places at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from casetrail_platform.folded import Fold
from casetrail_platform.policy.redaction import is_sensitive_code
from events.catalog.scheduling import (
    ServiceCancelled,
    ServiceDelivered,
    ServiceKind,
    ServiceLocation,
    ServiceRescheduled,
    ServiceScheduled,
)
from events.catalog.values import Provider
from events.envelope import RecordedEvent


class ServiceStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    DELIVERED = "delivered"


@dataclass(slots=True)
class Service:
    service_id: str
    case_id: str
    kind: ServiceKind
    provider: Provider
    starts_at: datetime
    ends_at: datetime
    location: ServiceLocation
    referral_id: str | None
    goal_id: str | None
    status: ServiceStatus = ServiceStatus.SCHEDULED
    changed_at: datetime | None = None
    """When it was scheduled, last moved or delivered, as stated: what is done to it next
    (moved again, cancelled, delivered; claimed once delivered) cannot have happened before."""
    moved: bool = False
    scheduled_at: datetime | None = None
    """When it was booked, as stated: what is arranged for it (budget reserved) cannot have
    happened before, whether it was moved since or not."""

    @property
    def last_change(self) -> str:
        """What ``changed_at`` is the moment of, in words."""
        if self.status is ServiceStatus.DELIVERED:
            done = "delivered"
        else:
            done = "last moved" if self.moved else "scheduled"
        return f"service {self.service_id} was {done}"

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        """Half-open slots: one service may start the moment another ends."""
        return starts_at < self.ends_at and self.starts_at < ends_at


@dataclass(frozen=True, slots=True)
class ScheduleShown:
    """Which of the client's services a caller is shown, by the rule ``GetClientSchedule``'s
    redaction follows: those of the cases the access policy lets them read (``readable``), of a
    special-data kind (addiction counseling) only those of the cases it shows them sensitive
    values of (``sensitive``). Nothing by default."""

    readable: frozenset[str] = frozenset()
    sensitive: frozenset[str] = frozenset()

    def shows(self, service: Service) -> bool:
        if service.case_id not in self.readable:
            return False
        return service.case_id in self.sensitive or not is_sensitive_code(service.kind.value)


@dataclass(slots=True)
class Schedule:
    version: int
    services: dict[str, Service]

    def conflict(
        self,
        starts_at: datetime,
        ends_at: datetime,
        ignore: str | None = None,
        shown: Callable[[Service], bool] = lambda service: True,
    ) -> Service | None:
        """The earliest service overlapping the slot that is scheduled or took place there (a
        delivered one keeps its slot: two services claimed for one hour of the client), if any;
        the earliest of those ``shown`` to the caller first: a refusal naming a hidden one when
        a shown one overlaps too would tell that the hidden one is there, and near when."""
        clashing = [
            service
            for service in self.services.values()
            if service.status is not ServiceStatus.CANCELLED
            and service.service_id != ignore
            and service.overlaps(starts_at, ends_at)
        ]
        return min(
            clashing, key=lambda service: (not shown(service), service.starts_at), default=None
        )

    def copy(self) -> Schedule:
        """A copy for a reader to keep: the kept schedule changes with the next command."""
        return Schedule(self.version, {key: replace(s) for key, s in self.services.items()})

    def of_case(self, case_id: str, service_id: str) -> Service | None:
        service = self.services.get(service_id)
        return service if service is not None and service.case_id == case_id else None


def schedule_state(history: Iterable[RecordedEvent]) -> Schedule:
    return fold_schedule(Schedule(0, {}), history)


def fold_schedule(schedule: Schedule, history: Iterable[RecordedEvent]) -> Schedule:
    """``schedule`` with ``history`` (the stream's next events) folded in, in place."""
    for recorded in history:
        schedule.version = recorded.sequence
        event = recorded.event
        match event:
            case ServiceScheduled():
                schedule.services[event.service_id] = Service(
                    event.service_id,
                    event.case_id,
                    event.kind,
                    event.provider,
                    event.starts_at,
                    event.ends_at,
                    event.location,
                    event.referral_id,
                    event.goal_id,
                    changed_at=recorded.metadata.occurred_at,
                    scheduled_at=recorded.metadata.occurred_at,
                )
            case ServiceRescheduled():
                service = schedule.services[event.service_id]
                service.starts_at = event.starts_at
                service.ends_at = event.ends_at
                service.location = event.location
                service.changed_at = recorded.metadata.occurred_at
                service.moved = True
            case ServiceCancelled():
                schedule.services[event.service_id].status = ServiceStatus.CANCELLED
            case ServiceDelivered():
                service = schedule.services[event.service_id]
                service.status = ServiceStatus.DELIVERED
                service.starts_at = event.starts_at
                service.ends_at = event.ends_at
                service.changed_at = recorded.metadata.occurred_at
    return schedule


SCHEDULE = Fold("coordination.schedule.v1", lambda: Schedule(0, {}), fold_schedule)
"""A client's schedule, kept folded between commands (``casetrail_platform.folded``): it grows
with every service of every case of the client. Holds opened sealed values (a service's kind,
its address), so a kept schedule goes when the client's keys do."""
