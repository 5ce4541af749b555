"""Coordination's real servicer on a real server for gRPC tests (``served``), and request
builders (the realistic defaults, overridable)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail.coordination.v1 import coordination_pb2_grpc
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from services.coordination.entrypoints.grpc_server import SERVICE_NAME, CoordinationServicer
from tests.support.grpc import refusal, serving, unpacked
from tests.support.identity import TestIssuer
from tests.unit.coordination.support import (
    TODAY,
    IntakeFeed,
    Refusal,
    carried_by,
    command_context,
    query_context,
    timestamp,
)

if TYPE_CHECKING:
    # Only the type stubs define the asyncio stub's type.
    from typing import TypeAlias

    from casetrail.coordination.v1.coordination_pb2_grpc import CoordinationServiceAsyncStub

    Stub: TypeAlias = CoordinationServiceAsyncStub


@asynccontextmanager
async def served(
    deps: Dependencies,
    issuer: TestIssuer,
    case_facts_caught_up: Callable[[str], Awaitable[bool]] | None = None,
) -> AsyncIterator[Stub]:
    """A stub of coordination's servicer on ``deps``, its access control reading the policy's
    facts from ``deps``' read models (behind the facts' barrier ``case_facts_caught_up``, if
    given), trusting ``issuer``'s tokens."""
    access = AccessControl(
        deps.store,
        CaseFactsReader(deps.read_models),
        "casetrail/coordination",
        home_agency=DEFAULT_HOME_AGENCY,
        case_facts_caught_up=case_facts_caught_up,
    )
    servicer = CoordinationServicer(deps, access)

    def register(server: grpc.aio.Server) -> None:
        coordination_pb2_grpc.add_CoordinationServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        yield coordination_pb2_grpc.CoordinationServiceStub(channel)  # type: ignore[misc]


PT_CLINIC = pb.Provider(provider_id="bayside-pt", name="Bayside Physical Therapy")
COUNSELING_CENTRE = pb.Provider(provider_id="harbor-counseling", name="Harbor Counseling Centre")
HOME_CARE_CO = pb.Provider(provider_id="eastbay-home-care", name="East Bay Home Care")
PARATRANSIT = pb.Provider(provider_id="senior-paratransit", name="County Senior Paratransit")
HOME = pb.ServiceLocation(kind="client_home")
SITE = pb.ServiceLocation(kind="provider_site", address="12 Harbor Way")


def usd(cents: int) -> pb.Money:
    return pb.Money(amount_minor_units=cents, currency="USD")


async def refused(call: Any) -> Refusal:
    """Await a call that must be refused; return its status and details."""
    code, status = await refusal(call)
    return Refusal(code, status.message, list(unpacked(status)))


async def refused_alike(ask: Callable[[str], Any], unknown: str = "case-unknown") -> Refusal:
    """The refusal of ``ask`` (a call on the case id it is given) on case-1, a case the caller
    does not carry, which must be told exactly as on an ``unknown`` case id (code, message,
    details): a worker refused learns nothing of which case ids are real."""
    real, other = [await refused(ask(case_id)) for case_id in ("case-1", unknown)]
    assert (other.code, other.message, other.details) == (real.code, real.message, real.details)
    return real


async def assigned_case(
    stub: Stub,
    intake: IntakeFeed,
    worker_id: str,
    need: NeedCategory = NeedCategory.HOME_CARE,
    recipient: str | None = None,
) -> None:
    """case-1 of client-1, opened with ``need`` and the client's consent to a referral (to
    ``recipient``, else the counselling centre), assigned to ``worker_id`` through AssignCase:
    a case another worker is not on."""
    await intake.open_case("case-1", "client-1", [need])
    await intake.consent("case-1", "client-1", recipient or COUNSELING_CENTRE.provider_id)
    await assign(stub, "case-1", worker_id)


async def assign(
    stub: Stub,
    case_id: str,
    worker_id: str,
    role: str = "coordinator",
    key: str | None = None,
    at: datetime = TODAY,
) -> pb.AssignCaseResponse:
    response: pb.AssignCaseResponse = await stub.AssignCase(
        pb.AssignCaseRequest(
            context=command_context(role, key, at=at), case_id=case_id, worker_id=worker_id
        )
    )
    return response


def schedule_request(
    case_id: str,
    kind: str,
    starts_at: datetime,
    hours: float = 1,
    provider: pb.Provider = PT_CLINIC,
    role: str = "case_manager",
    key: str | None = None,
    user: str | None = None,
    **fields: Any,
) -> pb.ScheduleServiceRequest:
    return pb.ScheduleServiceRequest(
        context=command_context(role, key, user),
        case_id=case_id,
        kind=kind,
        provider=provider,
        starts_at=timestamp(starts_at),
        ends_at=timestamp(starts_at + timedelta(hours=hours)),
        location=fields.pop("location", SITE),
        **fields,
    )


async def refer(
    stub: Stub, case_id: str, need: str, provider: pb.Provider = COUNSELING_CENTRE
) -> pb.MakeReferralResponse:
    response: pb.MakeReferralResponse = await stub.MakeReferral(
        pb.MakeReferralRequest(
            context=command_context("coordinator"),
            case_id=case_id,
            provider=provider,
            need_category=need,
            service=f"{need} sessions",
            urgency="soon",
            reason="adjusting to reduced mobility after hip surgery",
        )
    )
    return response


async def accept(
    stub: Stub, case_id: str, referral_id: str, provider: pb.Provider = COUNSELING_CENTRE
) -> None:
    """The provider takes the referral on (the partner agency answering)."""
    await stub.AcceptReferral(
        pb.AcceptReferralRequest(
            context=command_context("partner_agency", agency=provider.provider_id),
            case_id=case_id,
            referral_id=referral_id,
            provider_id=provider.provider_id,
        )
    )


def eligibility(program_id: str, **facts: object) -> pb.DetermineEligibilityRequest:
    return pb.DetermineEligibilityRequest(
        context=command_context("social_worker"),
        case_id="case-1",
        program_id=program_id,
        facts=pb.EligibilityFacts(**facts),  # type: ignore[arg-type]
    )


async def recorded_reasons(stub: Stub, case_id: str = "case-1") -> list[list[str]]:
    """The reasons of each eligibility decision of the case as recorded, read as the
    coordinator reads the case (a read, recorded): with the age the decision rested on, which
    DetermineEligibility's answer leaves out when it was the client's record's."""
    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id=case_id)
    )
    return [list(decision.reasons) for decision in view.eligibility]


NEXT_WEEK = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)


AN_HOUR = timedelta(hours=1)


Ask = Callable[[common_pb2.CommandContext, str], Any]
"""A call of one command on a case (``str``) by the caller of the context."""


def case_commands(stub: Stub, service_id: str, claim_id: str = "claim-1") -> dict[str, Ask]:
    """Every command a case-carrying role may run on a case of coordination (``service_id``:
    a service of the case; ``claim_id``: the claim whose decision is recorded)."""
    return {
        "MakeReferral": lambda ctx, case_id: stub.MakeReferral(
            pb.MakeReferralRequest(
                context=ctx,
                case_id=case_id,
                provider=PT_CLINIC,
                need_category="physical_therapy",
                service="hip rehabilitation",
                urgency="soon",
                reason="after hip surgery",
            )
        ),
        "ScheduleService": lambda ctx, case_id: stub.ScheduleService(
            pb.ScheduleServiceRequest(
                context=ctx,
                case_id=case_id,
                kind="home_care",
                provider=HOME_CARE_CO,
                starts_at=timestamp(NEXT_WEEK + 3 * AN_HOUR),
                ends_at=timestamp(NEXT_WEEK + 4 * AN_HOUR),
                location=pb.ServiceLocation(kind="client_home"),
            )
        ),
        "RescheduleService": lambda ctx, case_id: stub.RescheduleService(
            pb.RescheduleServiceRequest(
                context=ctx,
                case_id=case_id,
                service_id=service_id,
                starts_at=timestamp(NEXT_WEEK + 5 * AN_HOUR),
                ends_at=timestamp(NEXT_WEEK + 6 * AN_HOUR),
                reason="the carer is away",
            )
        ),
        "CancelService": lambda ctx, case_id: stub.CancelService(
            pb.CancelServiceRequest(
                context=ctx,
                case_id=case_id,
                service_id=service_id,
                cancelled_by="client",
                reason="in hospital",
            )
        ),
        "RecordServiceDelivered": lambda ctx, case_id: stub.RecordServiceDelivered(
            pb.RecordServiceDeliveredRequest(
                context=ctx,
                case_id=case_id,
                service_id=service_id,
                starts_at=timestamp(NEXT_WEEK - 14 * 24 * AN_HOUR),
                ends_at=timestamp(NEXT_WEEK - 14 * 24 * AN_HOUR + AN_HOUR),
            )
        ),
        "DetermineEligibility": lambda ctx, case_id: stub.DetermineEligibility(
            pb.DetermineEligibilityRequest(context=ctx, case_id=case_id, program_id="open-door")
        ),
        "FileInsuranceClaim": lambda ctx, case_id: stub.FileInsuranceClaim(
            pb.FileInsuranceClaimRequest(
                context=ctx,
                case_id=case_id,
                insurer=pb.Provider(provider_id="medicare", name="Medicare"),
                amount_claimed=usd(100),
                service_ids=[service_id],
            )
        ),
        "RecordClaimDecision": lambda ctx, case_id: stub.RecordClaimDecision(
            pb.RecordClaimDecisionRequest(
                context=ctx,
                case_id=case_id,
                claim_id=claim_id,
                insurer_id="medicare",
                decision="approved",
                amount_approved=usd(100),
            )
        ),
    }


async def booked_and_cancelled(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> list[str]:
    """case-1 (client-1, carried by its worker) with physical therapy booked on four days from
    Monday 10:00, the first and third cancelled: the services' ids, in booking order."""
    await intake.open_case("case-1", "client-1", [NeedCategory.PHYSICAL_THERAPY])
    await carried_by(store, "case-1")
    monday_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    ids = []
    for day in range(4):
        booked = await stub.ScheduleService(
            schedule_request("case-1", "physical_therapy", monday_10 + timedelta(days=day))
        )
        ids.append(booked.service_id)
    for cancelled in (ids[0], ids[2]):
        await stub.CancelService(
            pb.CancelServiceRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                service_id=cancelled,
                cancelled_by="agency",
                reason="clinic closed",
            )
        )
    return ids
