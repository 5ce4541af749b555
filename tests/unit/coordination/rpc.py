"""Request builders for coordination's gRPC tests (the realistic defaults, overridable)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from casetrail.coordination.v1 import coordination_pb2 as pb
from events.catalog.values import NeedCategory
from tests.support.grpc import refusal, unpacked
from tests.unit.coordination.support import (
    TODAY,
    IntakeFeed,
    Refusal,
    command_context,
    timestamp,
)

if TYPE_CHECKING:
    # Only the type stubs define the asyncio stub's type.
    from typing import TypeAlias

    from casetrail.coordination.v1.coordination_pb2_grpc import CoordinationServiceAsyncStub

    Stub: TypeAlias = CoordinationServiceAsyncStub

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
