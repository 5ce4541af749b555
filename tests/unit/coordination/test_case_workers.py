"""A case-carrying worker (case manager, social worker) does coordination's work only on the
case assigned to them: on another's case they are refused, as on a case that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.unit.coordination.rpc import (
    HOME_CARE_CO,
    PT_CLINIC,
    assigned_case,
    refused_alike,
    schedule_request,
    usd,
)
from tests.unit.coordination.support import IntakeFeed, command_context, timestamp

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

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


def _by_another(role: str, ask: Ask) -> Callable[[str], Any]:
    """``ask`` by a worker of ``role`` who carries no case (a context built for each call)."""
    return lambda case_id: ask(command_context(role, user=f"{role}-other"), case_id)


CLAIMS = frozenset({"FileInsuranceClaim", "RecordClaimDecision"})
"""A social worker handles no claim, whoever's the case (refused by role)."""


async def test_a_worker_not_on_the_case_is_refused_as_on_a_case_that_does_not_exist(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # Before, any case manager or social worker referred (disclosing the case to another
    # agency), scheduled, moved, called off or recorded services, decided eligibility and
    # filed claims on any case, and an unknown case answered NOT_FOUND.
    await assigned_case(stub, intake, "cm-dana", recipient=PT_CLINIC.provider_id)
    service_id = (
        await stub.ScheduleService(
            schedule_request(
                "case-1", "home_care", NEXT_WEEK, provider=HOME_CARE_CO, role="coordinator"
            )
        )
    ).service_id
    before = await store.read_all()

    commands = case_commands(stub, service_id)
    for role, names in (
        ("case_manager", list(commands)),
        ("social_worker", [n for n in commands if n not in CLAIMS]),
    ):
        for name in names:
            refusal = await refused_alike(_by_another(role, commands[name]))
            assert refusal.code is grpc.StatusCode.PERMISSION_DENIED, (role, name)
            assert "not assigned to them" in refusal.message, (role, name)
    assert await store.read_all() == before

    # The case's own worker does it.
    scheduled = await commands["ScheduleService"](
        command_context("case_manager", user="cm-dana"), "case-1"
    )
    assert scheduled.service_id
