"""Helpers for intake's unit tests: contexts, recorded events, closures from "planning", the
handlers' commands (a client registered, a case opened and assessed), an erasure committed in
the middle of a command (``ErasedOnceRead``). The requests of intake's gRPC API are
``requests``'."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import count
from typing import Any
from uuid import uuid4

import pytest

from casetrail.intake.v1 import intake_pb2_grpc
from casetrail_platform.commands import CommandContext
from casetrail_platform.identity.principal import Principal
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseClosed, DischargeReason
from events.catalog.erasure import ClientErased
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app import handlers
from services.intake.app.commands import (
    AssessedNeedInput,
    FactorsInput,
    IdentifierInput,
    NameInput,
    OpenCase,
    PresentingNeedInput,
    RecordInitialAssessment,
    ReferralSourceInput,
    RegisterClient,
)
from services.intake.domain.clients import client_stream

_positions = count(1)


def context(role: Role = Role.INTAKE_WORKER, key: str | None = None) -> CommandContext:
    return CommandContext(
        actor=Actor(f"user-{role.value}", role), idempotency_key=key or str(uuid4())
    )


def caller(ctx: CommandContext) -> Principal:
    """The verified caller who sent the command of ``ctx``: staff of the agency, no team."""
    return Principal(ctx.actor.user_id, ctx.actor.role, DEFAULT_HOME_AGENCY, "test")


def recorded(
    event: CaseEvent,
    stream: str,
    sequence: int,
    *,
    source: str = "casetrail/intake",
    role: Role = Role.INTAKE_WORKER,
    occurred_at: datetime | None = None,
) -> RecordedEvent:
    """``occurred_at``: when the event is stated to have happened (by default, now)."""
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
            occurred_at=occurred_at or now,
            correlation_id=uuid4(),
        ),
    )


def closed_by_planning(
    case_id: str, sequence: int, occurred_at: datetime | None = None
) -> RecordedEvent:
    """The planning service's closure of ``case_id`` as the bus delivers it."""
    return recorded(
        CaseClosed(case_id=case_id, reason=DischargeReason.GOALS_ACHIEVED),
        f"case-{case_id}",
        sequence,
        source="casetrail/planning",
        role=Role.COORDINATOR,
        occurred_at=occurred_at,
    )


@dataclass
class Intake:
    """A running intake service (embedded) and a stub to call it."""

    stub: intake_pb2_grpc.IntakeServiceStub
    infra: Infrastructure


TODAY = date(2024, 3, 1)


def marco(
    given: str = "Marco",
    family: str = "Bellini",
    birth: str | None = "1941-06-02",
    identifiers: tuple[IdentifierInput, ...] = (),
    confirmed: bool = False,
) -> RegisterClient:
    return RegisterClient(
        name=NameInput(given_names=given, family_name=family),
        date_of_birth=birth,
        identifiers=identifiers,
        confirmed_not_duplicate=confirmed,
    )


async def register(
    store: SqliteEventStore,
    directory: ClientDirectory,
    command: RegisterClient,
    ctx: CommandContext | None = None,
) -> handlers.Registration:
    return await handlers.register_client(
        store, directory, ctx or context(Role.RECEPTIONIST), command, TODAY
    )


def opening(client_id: str) -> OpenCase:
    return OpenCase(
        client_id=client_id,
        referral_source=ReferralSourceInput(kind="hospital", name="St Mary discharge team"),
        presenting_needs=(PresentingNeedInput(category="home_care", description="Lives alone"),),
    )


def assessing(case_id: str) -> RecordInitialAssessment:
    return RecordInitialAssessment(
        case_id=case_id,
        factors=FactorsInput(biological="Hip replacement", economic="State pension only"),
        needs=(AssessedNeedInput(category="home_care", urgency="immediate"),),
        strengths=("Motivated to stay at home",),
    )


async def assess(
    store: SqliteEventStore,
    closures: ClosureLog,
    access: AccessControl,
    case_id: str,
    ctx: CommandContext | None = None,
) -> tuple[handlers.Recorded, str]:
    """``assessing(case_id)`` recorded by the handler, sent by ``ctx``'s caller (by default an
    intake worker's new command)."""
    sent = ctx or context()
    return await handlers.record_initial_assessment(
        store, closures, access, caller(sent), sent, assessing(case_id)
    )


async def open_a_case(store: SqliteEventStore, directory: ClientDirectory) -> str:
    client = await register(store, directory, marco())
    opened = await handlers.open_case(store, context(), opening(client.recorded.subject_id))
    return opened.subject_id


class ErasedOnceRead:
    """Patches ``store.read_stream`` so that the client's erasure commits right after the
    ``reads``-th read of the client's stream from now on (by the command under test)."""

    def __init__(
        self,
        store: SqliteEventStore,
        monkeypatch: pytest.MonkeyPatch,
        client_id: str,
        reads: int = 1,
    ) -> None:
        self.erased = False
        read_stream = store.read_stream
        client = client_stream(client_id)
        seen = 0

        async def read(stream: str, **kwargs: Any) -> list[RecordedEvent]:
            nonlocal seen
            history = await read_stream(stream, **kwargs)
            if stream == client and not self.erased:
                seen += 1
                if seen == reads:
                    self.erased = True
                    erasure = ClientErased(client_id=client_id, request_reference="dms://dsr/9")
                    metadata = EventMetadata(
                        source="casetrail/intake",
                        actor=Actor("dpo-1", Role.SUPERVISOR),
                        occurred_at=datetime.now(UTC),
                        correlation_id=uuid.uuid4(),
                    )
                    await store.append(client, [NewEvent(erasure, metadata)], len(history))
            return history

        monkeypatch.setattr(store, "read_stream", read)


GRANTEE = Principal(
    "sw-luis", Role.SOCIAL_WORKER, "eastbay-dss", "test", "team-east", frozenset({"break_glass"})
)
"""A social worker who may break the glass: an emergency access's grantee."""


def context_of(principal: Principal) -> CommandContext:
    """A command's context, ``principal`` acting."""
    return CommandContext(actor=principal.actor, idempotency_key=uuid4().hex)
