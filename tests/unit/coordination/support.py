"""Helpers for coordination's unit tests: the test agency, intake's facts as the bus delivers
them, contexts, reading the details of a refusal, and a case transferred in the middle of a
command (``TransferredOnceRead``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import count
from typing import Any, TypeVar
from uuid import uuid4

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail_platform.identity.development import DEFAULT_AGENCY
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.store.port import ANY_VERSION, EventStore
from cli.rpc import Person
from events.catalog.access import (
    AccessPurpose,
    ConsentGranted,
    ConsentRecipient,
    RecipientKind,
    RecordSection,
    SensitiveCategory,
)
from events.catalog.assessment import AssessedNeed, AssessmentFactors, InitialAssessmentRecorded
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
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered, PersonName
from events.catalog.values import NeedCategory, Urgency
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from services.coordination.domain.agency import Agency
from services.coordination.domain.facts import case_stream
from tests.support.identity import acting

TODAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""The moment the tests' commands say they happen."""

OPENED = TODAY - timedelta(days=1)
"""When intake's facts say they happened: commands may not state a moment before the case's
opening."""

_positions = count(1)
M = TypeVar("M", bound=Message)


def sample_agency() -> Agency:
    licence: dict[str, Any] = {"kind": "licence", "issued_by": "State board"}
    return Agency.model_validate(
        {
            "agency_id": "test-agency",
            "name": "Test agency",
            "workers": [
                {
                    "worker_id": "sw-lcsw",
                    "team": "team-west",
                    "name": "Amara Okafor",
                    "role": "social_worker",
                    "credentials": [{**licence, "name": "LCSW", "valid_until": "2030-01-01"}],
                    "caseload_capacity": 2,
                },
                {
                    "worker_id": "sw-expired",
                    "team": "team-west",
                    "name": "Grace Kim",
                    "role": "social_worker",
                    "credentials": [{**licence, "name": "LBSW", "valid_until": "2025-12-31"}],
                    "caseload_capacity": 10,
                },
                {
                    "worker_id": "cm-dana",
                    "team": "team-east",
                    "name": "Dana Reyes",
                    "role": "case_manager",
                    "credentials": [{"kind": "certification", "name": "CCM"}],
                    "caseload_capacity": 1,
                },
                {
                    "worker_id": "sup-helen",
                    "name": "Helen Morris",
                    "role": "supervisor",
                    "credentials": [{**licence, "name": "LCSW"}],
                    "caseload_capacity": 5,
                },
            ],
            "programs": [
                {
                    "program_id": "home-care-medicaid-waiver",
                    "name": "Home care (Medicaid waiver)",
                    "min_age": 65,
                    "max_monthly_income": {"amount_minor_units": 290_100, "currency": "USD"},
                    "residence_in": ["us-ca-alameda"],
                    "valid_for_days": 365,
                },
                {"program_id": "open-door", "name": "Open door drop-in"},
            ],
            "budget_lines": [
                {
                    "budget_line": "home-care-fy2026",
                    "name": "Home care",
                    "amount": {"amount_minor_units": 100_000, "currency": "USD"},
                    "funds_service_kinds": ["home_care"],
                },
                {
                    "budget_line": "flex",
                    "name": "Flexible fund",
                    "amount": {"amount_minor_units": 50_000, "currency": "USD"},
                },
            ],
        }
    )


@dataclass
class IntakeFeed:
    """Intake's (and planning's) events about cases, delivered as the bus subscription does."""

    handler: BusProjectionHandler
    policy: BusProjectionHandler
    """The access policy's facts (consents), fed from the same events."""
    _sequences: dict[str, int] = field(default_factory=dict)

    async def consent(
        self,
        case_id: str,
        client_id: str,
        recipient: str = "harbor-counseling",
        categories: Iterable[SensitiveCategory] = (),
    ) -> None:
        """The client's consent to refer them to ``recipient`` (Intake.GrantConsent)."""
        await self.deliver(
            ConsentGranted(
                case_id=case_id,
                client_id=client_id,
                consent_id=f"consent-{case_id}-{recipient}",
                scope=(RecordSection.REFERRALS,),
                categories=tuple(categories),
                recipient=ConsentRecipient(
                    kind=RecipientKind.AGENCY, recipient_id=recipient, name=recipient
                ),
                purpose=AccessPurpose.COORDINATION,
                expires_at=datetime.now(UTC) + timedelta(days=90),
                document_reference="scan://consents/test.pdf",
            ),
            f"case-{case_id}",
        )

    async def register_client(self, client_id: str, born: date) -> None:
        await self.deliver(
            ClientRegistered(
                client_id=client_id,
                name=PersonName(given_names="Walter", family_name="Brenner"),
                date_of_birth=born,
            ),
            f"client-{client_id}",
        )

    async def correct_date_of_birth(self, client_id: str, born: date) -> None:
        """Intake.CorrectClientDateOfBirth."""
        await self.deliver(
            ClientDateOfBirthCorrected(
                client_id=client_id, date_of_birth=born, reason="Birth certificate seen"
            ),
            f"client-{client_id}",
        )

    async def open_case(
        self,
        case_id: str,
        client_id: str,
        needs: Iterable[NeedCategory],
        assessed: Iterable[NeedCategory] = (),
        at: datetime = OPENED,
    ) -> None:
        await self.deliver(
            CaseOpened(
                case_id=case_id,
                client_id=client_id,
                referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
                presenting_needs=tuple(PresentingNeed(category=need) for need in needs),
            ),
            f"case-{case_id}",
            occurred_at=at,
        )
        assessed = tuple(assessed)
        if assessed:
            await self.deliver(
                InitialAssessmentRecorded(
                    case_id=case_id,
                    assessment_id=f"assessment-{case_id}",
                    factors=AssessmentFactors(social="lives alone"),
                    needs=tuple(
                        AssessedNeed(category=need, urgency=Urgency.SOON) for need in assessed
                    ),
                ),
                f"case-{case_id}",
            )

    async def close_case(self, case_id: str, at: datetime = TODAY) -> RecordedEvent:
        return await self.deliver(
            CaseClosed(case_id=case_id, reason=DischargeReason.GOALS_ACHIEVED),
            f"case-{case_id}",
            source="casetrail/planning",
            occurred_at=at,
        )

    async def reopen_case(self, case_id: str) -> None:
        await self.deliver(CaseReopened(case_id=case_id, reason="fell again"), f"case-{case_id}")

    async def deliver(
        self,
        event: CaseEvent,
        stream: str,
        source: str = "casetrail/intake",
        occurred_at: datetime = OPENED,
    ) -> RecordedEvent:
        recorded = self.record(event, stream, source, occurred_at)
        await self.handler(recorded)
        await self.policy(recorded)
        return recorded

    def record(
        self,
        event: CaseEvent,
        stream: str,
        source: str = "casetrail/intake",
        occurred_at: datetime = OPENED,
    ) -> RecordedEvent:
        """The event as its source's store records it, next in its stream, delivered to no
        one yet (a test hands it over in whichever order it needs)."""
        key = f"{source}|{stream}"
        self._sequences[key] = self._sequences.get(key, 0) + 1
        recorded = RecordedEvent(
            event_id=uuid4(),
            stream=stream,
            sequence=self._sequences[key],
            position=next(_positions),
            recorded_at=datetime.now(UTC),
            event=event,
            metadata=EventMetadata(
                source=source,
                actor=Actor("intake-1", Role.INTAKE_WORKER),
                occurred_at=occurred_at,
                correlation_id=uuid4(),
            ),
        )
        return recorded

    async def policy_told_assigned(self, case_id: str, worker_id: str, team: str) -> None:
        """The access policy's facts told over the bus that a case manager of ``team`` carries
        ``case_id`` (coordination's own store may say otherwise: ``transferred``)."""
        assigned = CaseAssigned(
            case_id=case_id,
            worker_id=worker_id,
            worker_role=Role.CASE_MANAGER,
            worker_team=team,
            reason="fits",
        )
        await self.policy(self.record(assigned, case_stream(case_id), "casetrail/coordination"))


CASE_MANAGER = "user-case_manager"
"""The case manager of ``command_context``'s default user (``carried_by``'s default worker)."""


async def carried_by(
    store: EventStore,
    case_id: str,
    worker_id: str = CASE_MANAGER,
    role: Role = Role.CASE_MANAGER,
    team: str | None = None,
) -> None:
    """``case_id`` assigned to ``worker_id`` (of ``team``) in coordination's own store, where
    its commands look up whose case it is: a case-carrying worker acts only on the case they
    carry, a supervisor only on their team's. Written as the assignment is recorded, without
    ``AssignCase``'s rules (the worker need not be one of the agency file's, nor have room in
    a caseload)."""
    assigned = CaseAssigned(
        case_id=case_id, worker_id=worker_id, worker_role=role, worker_team=team, reason="fits"
    )
    metadata = EventMetadata(
        source="casetrail/coordination",
        actor=Actor("user-coordinator", Role.COORDINATOR),
        occurred_at=OPENED,
        correlation_id=uuid4(),
    )
    await store.append(case_stream(case_id), [NewEvent(assigned, metadata)], ANY_VERSION)


async def transferred(
    store: EventStore,
    case_id: str,
    previous_worker_id: str = "cm-dana",
    worker_id: str = "sw-lcsw",
    team: str | None = "team-west",
) -> None:
    """``case_id`` moved from ``previous_worker_id`` to ``worker_id`` (a social worker of
    ``team``) in coordination's own store, as TransferCase records it, and delivered to no one:
    the access policy's facts over the bus still say what they said."""
    moved = CaseReassigned(
        case_id=case_id,
        previous_worker_id=previous_worker_id,
        worker_id=worker_id,
        worker_role=Role.SOCIAL_WORKER,
        worker_team=team,
        reason="worker on leave",
    )
    metadata = EventMetadata(
        source="casetrail/coordination",
        actor=Actor("user-coordinator", Role.COORDINATOR),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid4(),
    )
    stream = case_stream(case_id)
    await store.append(stream, [NewEvent(moved, metadata)], await store.stream_version(stream))


def command_context(
    role: str,
    key: str | None = None,
    user: str | None = None,
    at: datetime = TODAY,
    agency: str = DEFAULT_AGENCY,
) -> common_pb2.CommandContext:
    """``agency``: the token's (a partner agency's is its own)."""
    occurred_at = Timestamp()
    occurred_at.FromDatetime(at)
    return acting(
        Person(user or f"user-{role}", role, agency=agency),
        common_pb2.CommandContext(idempotency_key=key or str(uuid4()), occurred_at=occurred_at),
    )


def query_context(
    role: str = "coordinator", purpose: str = "coordination"
) -> common_pb2.QueryContext:
    return acting(Person(f"user-{role}", role), common_pb2.QueryContext(purpose=purpose))


def timestamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    message: str
    details: list[Any]

    def detail(self, kind: type[M]) -> M:
        return next(d for d in self.details if isinstance(d, kind))

    @property
    def rule(self) -> str:
        reason: str = self.detail(error_details_pb2.ErrorInfo).reason
        return reason

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.detail(error_details_pb2.ErrorInfo).metadata)

    @property
    def fields(self) -> list[str]:
        bad = self.detail(error_details_pb2.BadRequest)
        return [violation.field for violation in bad.field_violations]


class TransferredOnceRead:
    """Patches the store's reads so that the case's transfer from cm-dana to sw-lcsw (of
    team-west) commits right after the ``reads``-th read of the case's stream from now on (0:
    never)."""

    def __init__(
        self, store: EventStore, monkeypatch: pytest.MonkeyPatch, case_id: str, reads: int
    ) -> None:
        self.transferred = False
        stream = case_stream(case_id)
        read_stream, read_for_command = store.read_stream, store.read_for_command
        seen = 0

        async def seen_once() -> None:
            nonlocal seen
            seen += 1
            if seen != reads or self.transferred:
                return
            self.transferred = True
            await transferred(store, case_id)

        async def read(name: str, **kwargs: Any) -> list[RecordedEvent]:
            history = await read_stream(name, **kwargs)
            if name == stream:
                await seen_once()
            return history

        async def read_for(
            causation_id: uuid.UUID, name: str, from_version: int = 1
        ) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
            answer = await read_for_command(causation_id, name, from_version)
            if name == stream:
                await seen_once()
            return answer

        monkeypatch.setattr(store, "read_stream", read)
        monkeypatch.setattr(store, "read_for_command", read_for)
