"""Helpers for intake's unit tests: contexts, recorded events, closures from "planning"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from uuid import uuid4

from casetrail.intake.v1 import intake_pb2_grpc
from casetrail_platform.commands import CommandContext
from casetrail_platform.hosting import Infrastructure
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseClosed, DischargeReason
from events.envelope import Actor, EventMetadata, RecordedEvent

_positions = count(1)


def context(role: Role = Role.INTAKE_WORKER, key: str | None = None) -> CommandContext:
    return CommandContext(
        actor=Actor(f"user-{role.value}", role), idempotency_key=key or str(uuid4())
    )


def recorded(
    event: CaseEvent,
    stream: str,
    sequence: int,
    *,
    source: str = "casetrail/intake",
    role: Role = Role.INTAKE_WORKER,
) -> RecordedEvent:
    now = datetime.now(UTC)
    return RecordedEvent(
        event_id=uuid4(),
        stream=stream,
        sequence=sequence,
        position=next(_positions),
        recorded_at=now,
        event=event,
        metadata=EventMetadata(
            source=source,
            actor=Actor(f"user-{role.value}", role),
            occurred_at=now,
            correlation_id=uuid4(),
        ),
    )


def closed_by_planning(case_id: str, sequence: int) -> RecordedEvent:
    """The planning service's closure of ``case_id`` as the bus delivers it."""
    return recorded(
        CaseClosed(case_id=case_id, reason=DischargeReason.GOALS_ACHIEVED),
        f"case-{case_id}",
        sequence,
        source="casetrail/planning",
        role=Role.COORDINATOR,
    )


@dataclass
class Intake:
    """A running intake service (embedded) and a stub to call it."""

    stub: intake_pb2_grpc.IntakeServiceStub
    infra: Infrastructure
