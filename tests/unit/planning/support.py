"""What planning's tests share: other services' events, a bus feed into the case view, a
realistic history run through the handlers (``build_realistic_history``), and the contexts and
refusals of the servicer's tests.

Other services' events are written to their own real SQLite stores (as intake and coordination
would), then delivered to planning's case view through the same ``BusProjectionHandler`` the
service subscribes with. Delivery is explicit (``sync``), so tests need no waiting.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from casetrail.common.v1 import common_pb2
from casetrail_platform.commands import CommandContext
from casetrail_platform.policy.projection import CaseFactsProjection
from casetrail_platform.projections.port import Document, ReadModelStore
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.assessment import AssessedNeed, AssessmentFactors, InitialAssessmentRecorded
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import (
    CaseOpened,
    CaseReopened,
    DischargeReason,
    PresentingNeed,
    ReferralSource,
    ReferralSourceKind,
)
from events.catalog.monitoring import ContactKind, GoalProgress, ProgressRating
from events.catalog.planning import Goal, GoalTerm, PlanTask, TaskOwner, TaskOwnerKind
from events.catalog.referrals import (
    ReferralAccepted,
    ReferralMade,
)
from events.catalog.scheduling import (
    CancelledBy,
    LocationKind,
    ServiceCancelled,
    ServiceDelivered,
    ServiceKind,
    ServiceLocation,
    ServiceScheduled,
)
from events.catalog.values import NeedCategory, Provider, Urgency
from events.catalog_registry import default_registry
from events.envelope import Actor, RecordedEvent
from services.planning.adapters.case_views import CaseViewProjection
from services.planning.app.handlers import Dependencies, handle
from services.planning.domain import commands as c
from tests.support.grpc import refusal, unpacked
from tests.support.identity import acting

INTAKE = "casetrail/intake"
COORDINATION = "casetrail/coordination"
PLANNING = "casetrail/planning"

COORDINATOR = Actor("coord-1", Role.COORDINATOR)
WORKER = Actor("worker-ana", Role.SOCIAL_WORKER)
OTHER_WORKER = Actor("worker-bo", Role.CASE_MANAGER)
SUPERVISOR = Actor("super-1", Role.SUPERVISOR)
INTAKE_WORKER = Actor("intake-1", Role.INTAKE_WORKER)
RECEPTIONIST = Actor("recep-1", Role.RECEPTIONIST)

START = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
PHYSIO = Provider(provider_id="prov-physio", name="North Physiotherapy")


def goal(goal_id: str = "goal-walk", statement: str = "Walk to the shop unaided") -> Goal:
    return Goal(
        goal_id=goal_id,
        statement=statement,
        term=GoalTerm.SHORT,
        need_category=NeedCategory.PHYSICAL_THERAPY,
        objectives=("Walks 200 m with a cane by week 6",),
        tasks=(
            PlanTask(
                task_id="task-transport",
                description="Book transport to therapy",
                owner=TaskOwner(kind=TaskOwnerKind.WORKER, owner_id="worker-ana"),
                target_date=date(2030, 3, 8),
            ),
        ),
    )


def case_opened(case_id: str) -> CaseOpened:
    return CaseOpened(
        case_id=case_id,
        client_id=f"client-{case_id}",
        referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
        presenting_needs=(
            PresentingNeed(category=NeedCategory.HOME_CARE),
            PresentingNeed(category=NeedCategory.TRANSPORTATION),
        ),
    )


def assessed(case_id: str) -> InitialAssessmentRecorded:
    return InitialAssessmentRecorded(
        case_id=case_id,
        assessment_id="assess-1",
        factors=AssessmentFactors(social="Lives alone"),
        needs=(
            AssessedNeed(category=NeedCategory.HOME_CARE, urgency=Urgency.IMMEDIATE),
            AssessedNeed(category=NeedCategory.PHYSICAL_THERAPY, urgency=Urgency.SOON),
        ),
    )


def assigned(case_id: str, worker: Actor = WORKER) -> CaseAssigned:
    return CaseAssigned(
        case_id=case_id, worker_id=worker.user_id, worker_role=worker.role, reason="fits"
    )


def reassigned(case_id: str, previous: Actor, worker: Actor) -> CaseReassigned:
    return CaseReassigned(
        case_id=case_id,
        previous_worker_id=previous.user_id,
        worker_id=worker.user_id,
        worker_role=worker.role,
        reason="caseload",
    )


def reopened(case_id: str) -> CaseReopened:
    return CaseReopened(case_id=case_id, reason="Fell again at home")


def scheduled(case_id: str, service_id: str, day: int = 0) -> ServiceScheduled:
    starts = START + timedelta(days=day)
    return ServiceScheduled(
        case_id=case_id,
        service_id=service_id,
        kind=ServiceKind.PHYSICAL_THERAPY,
        provider=PHYSIO,
        starts_at=starts,
        ends_at=starts + timedelta(hours=1),
        location=ServiceLocation(kind=LocationKind.CLIENT_HOME),
        goal_id="goal-walk",
    )


def delivered(case_id: str, service_id: str) -> ServiceDelivered:
    return ServiceDelivered(
        case_id=case_id,
        service_id=service_id,
        starts_at=START,
        ends_at=START + timedelta(hours=1),
    )


def cancelled(case_id: str, service_id: str) -> ServiceCancelled:
    return ServiceCancelled(
        case_id=case_id, service_id=service_id, cancelled_by=CancelledBy.CLIENT, reason="ill"
    )


def referral(case_id: str, referral_id: str = "ref-1") -> ReferralMade:
    return ReferralMade(
        case_id=case_id,
        referral_id=referral_id,
        provider=PHYSIO,
        need_category=NeedCategory.PHYSICAL_THERAPY,
        service="Home physiotherapy",
        urgency=Urgency.SOON,
        reason="Hip replacement",
    )


def referral_accepted(case_id: str, referral_id: str = "ref-1") -> ReferralAccepted:
    return ReferralAccepted(case_id=case_id, referral_id=referral_id, provider_id="prov-physio")


@dataclass
class Bus:
    """Other services' stores, and delivery of every store's new events to the case view."""

    tmp_path: Path
    read_models: ReadModelStore
    planning_store: EventStore
    stores: dict[str, EventStore] = field(default_factory=dict)
    delivered_up_to: dict[str, int] = field(default_factory=dict)
    keys: int = 0
    time_zone: tzinfo = UTC
    """The agency's, whose dates the case view shows."""

    def handler(self) -> BusProjectionHandler:
        projection = CaseViewProjection(self.time_zone)
        return BusProjectionHandler(self.read_models, projection, service="planning")

    def facts_handler(self) -> BusProjectionHandler:
        """The access policy's facts, as every service keeps them (casetrail_platform/policy)."""
        return BusProjectionHandler(self.read_models, CaseFactsProjection(), service="planning")

    async def record(
        self,
        source: str,
        case_id: str,
        *events: CaseEvent,
        actor: Actor = COORDINATOR,
        occurred_at: datetime = START,
    ) -> list[RecordedEvent]:
        """Append events as service ``source`` would, then deliver everything pending."""
        recorded = await self.append(source, case_id, *events, actor=actor, occurred_at=occurred_at)
        await self.sync()
        return recorded

    async def append(
        self,
        source: str,
        case_id: str,
        *events: CaseEvent,
        actor: Actor = COORDINATOR,
        occurred_at: datetime = START,
    ) -> list[RecordedEvent]:
        """Append events as service ``source`` would (planning's own: to its store, as
        recorded before a rule it breaks was), delivering nothing yet."""
        store = self.planning_store if source == PLANNING else await self._store(source)
        self.keys += 1
        context = CommandContext(actor, f"k{self.keys}", occurred_at=occurred_at)
        stream = f"case-{case_id}"
        return await store.append(
            stream, context.new_events(source, events), await store.stream_version(stream)
        )

    async def sync(self) -> None:
        """Deliver every event not yet delivered, from every store (planning's included)."""
        handler, facts = self.handler(), self.facts_handler()
        for name, store in [(PLANNING, self.planning_store), *self.stores.items()]:
            position = self.delivered_up_to.get(name, 0)
            for recorded in await store.read_all(position):
                await handler(recorded)
                await facts(recorded)
                position = recorded.position
            self.delivered_up_to[name] = position

    async def open_case(
        self, case_id: str, worker: Actor | None = WORKER, *, assess: bool = True
    ) -> None:
        """Opened, assessed (a plan builds on the assessment), then assigned to ``worker``."""
        await self.record(INTAKE, case_id, case_opened(case_id), actor=INTAKE_WORKER)
        if assess:
            await self.record(INTAKE, case_id, assessed(case_id), actor=INTAKE_WORKER)
        if worker is not None:
            await self.record(COORDINATION, case_id, assigned(case_id, worker))

    async def close(self) -> None:
        for store in self.stores.values():
            await store.close()

    async def _store(self, source: str) -> EventStore:
        if source not in self.stores:
            name = source.rsplit("/", 1)[-1]
            self.stores[source] = await SqliteEventStore.open(
                self.tmp_path / f"{name}.db", default_registry()
            )
        return self.stores[source]


async def dump(read_models: ReadModelStore, collections: tuple[str, ...]) -> dict[str, Document]:
    """Every document of the given collections, keyed ``collection/key``."""
    documents: dict[str, Document] = {}
    for collection in collections:
        async for key, document in read_models.scan(collection):
            documents[f"{collection}/{key}"] = document
    return documents


D = TypeVar("D", bound=Message)


def ctx(actor: Actor = WORKER, key: str = "key-1") -> common_pb2.CommandContext:
    return acting(_person(actor), common_pb2.CommandContext(idempotency_key=key))


def query(actor: Actor = COORDINATOR, purpose: str = "coordination") -> common_pb2.QueryContext:
    return acting(_person(actor), common_pb2.QueryContext(purpose=purpose))


def _person(actor: Actor) -> Person:
    return Person(actor.user_id, actor.role.value)


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, list[Any]]:
    """The status code and unpacked rich details of a call that must fail."""
    code, status = await refusal(call)
    return code, list(unpacked(status))


def one(details: list[Any], kind: type[D]) -> D:
    [found] = [detail for detail in details if isinstance(detail, kind)]
    return found


class Planner:
    """Runs planning commands through the real handler, then lets the bus deliver them."""

    def __init__(self, deps: Dependencies, bus: Bus) -> None:
        self.deps = deps
        self.bus = bus
        self.keys = 0

    async def __call__(
        self, command: c.Command, actor: Actor = WORKER, occurred_at: datetime = START
    ) -> None:
        self.keys += 1
        context = CommandContext(actor, f"cmd-{self.keys}", occurred_at=occurred_at)
        await handle(self.deps, context, command)
        await self.bus.sync()


async def build_realistic_history(deps: Dependencies, bus: Bus) -> None:
    plan = Planner(deps, bus)
    # Case A: the elderly client leaving hospital, carried by Ana, through most of the cycle.
    await bus.open_case("case-a")
    await plan(c.DraftPlan("case-a", "plan-a", (goal("goal-walk"),)))
    await plan(c.AddGoal("case-a", goal("goal-club", "Join the Thursday club")))
    await plan(c.RecordAgreement("case-a", None, "I want to stay at home", True))
    await bus.record(COORDINATION, "case-a", referral("case-a"), referral_accepted("case-a"))
    await bus.record(COORDINATION, "case-a", scheduled("case-a", "svc-1"))
    await bus.record(COORDINATION, "case-a", scheduled("case-a", "svc-2", day=3))
    await bus.record(COORDINATION, "case-a", delivered("case-a", "svc-1"))
    await plan(
        c.LogContact("case-a", "contact-1", ContactKind.HOME_VISIT, "Managing", date(2030, 3, 10))
    )
    progress = (GoalProgress(goal_id="goal-walk", rating=ProgressRating.ON_TRACK),)
    await plan(c.EvaluateProgress("case-a", "eval-1", progress, ("daughter",), (), True))
    await plan(c.ReviseGoal("case-a", goal("goal-club", "Join the club twice a week"), "keen"))
    await plan(c.PlanDischarge("case-a", date(2030, 9, 1), ("walks alone",), (), False, None))
    # Case B: carried by Bo, follow-up due later.
    await bus.open_case("case-b", OTHER_WORKER, assess=False)
    await plan(
        c.LogContact("case-b", "contact-b", ContactKind.PHONE_CALL, "ok", date(2030, 4, 1)),
        actor=OTHER_WORKER,
    )
    # Case C: just opened, nobody assigned yet.
    await bus.open_case("case-c", worker=None, assess=False)
    # Case D: overdue follow-up, then closed once its service was cancelled, reopened, closed.
    await bus.open_case("case-d", assess=False)
    await plan(c.LogContact("case-d", "contact-d", ContactKind.MESSAGE, "hi", date(2030, 3, 2)))
    await bus.record(COORDINATION, "case-d", scheduled("case-d", "svc-d"))
    await bus.record(COORDINATION, "case-d", cancelled("case-d", "svc-d"))
    await plan(c.CloseCase("case-d", DischargeReason.CLIENT_MOVED, None))
    await bus.record(INTAKE, "case-d", reopened("case-d"))
    await plan(c.CloseCase("case-d", DischargeReason.CLIENT_INDEPENDENT, None))
