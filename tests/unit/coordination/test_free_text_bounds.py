"""Every free text coordination's RPCs take (a reason, an outcome, a note, a name, an address)
is checked with the rest of the request, before anything is read or decided: over the
catalog's bound, blank where it is required, or holding a control character, it is
INVALID_ARGUMENT naming the field, never INTERNAL, and nothing is written. (Intake's
RevokeConsent built its event from an unchecked reason: a reason over the bound was refused
by the decision's event, as INTERNAL.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from services.coordination.app.handlers.running import Dependencies
from tests.support.grpc import refusal, violated_fields
from tests.unit.coordination.rpc import COUNSELING_CENTRE, SITE, usd
from tests.unit.coordination.support import TODAY, command_context, timestamp

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

SHORT = 500
"""The catalog's bound of names and short texts (NonEmptyStr)."""
NOTE = 20_000
"""Of notes and reasons (Note, SensitiveNote)."""


class FreeText(NamedTuple):
    rpc: str
    field: str
    bound: int
    required: bool
    request: Callable[[str], Any]
    """The request, valid but for ``field``, which holds the text given."""


def _provider(name: str) -> pb.Provider:
    return pb.Provider(provider_id=COUNSELING_CENTRE.provider_id, name=name)


def _partner() -> Any:
    return command_context("partner_agency", agency=COUNSELING_CENTRE.provider_id)


def _referral(**fields: Any) -> pb.MakeReferralRequest:
    return pb.MakeReferralRequest(
        **{
            "context": command_context("coordinator"),
            "case_id": "case-1",
            "provider": COUNSELING_CENTRE,
            "need_category": "mental_health",
            "service": "counselling sessions",
            "urgency": "soon",
            "reason": "adjusting to reduced mobility",
            **fields,
        }
    )


def _schedule(**fields: Any) -> pb.ScheduleServiceRequest:
    return pb.ScheduleServiceRequest(
        **{
            "context": command_context("case_manager"),
            "case_id": "case-1",
            "kind": "physical_therapy",
            "provider": COUNSELING_CENTRE,
            "starts_at": timestamp(TODAY + timedelta(days=1)),
            "ends_at": timestamp(TODAY + timedelta(days=1, hours=1)),
            "location": SITE,
            **fields,
        }
    )


def _window() -> dict[str, Any]:
    return {
        "starts_at": timestamp(TODAY + timedelta(days=2)),
        "ends_at": timestamp(TODAY + timedelta(days=2, hours=1)),
    }


def _claim(**fields: Any) -> pb.FileInsuranceClaimRequest:
    return pb.FileInsuranceClaimRequest(
        **{
            "context": command_context("coordinator"),
            "case_id": "case-1",
            "insurer": pb.Provider(provider_id="county-medicaid", name="County Medicaid"),
            "amount_claimed": usd(10_000),
            "service_ids": ["svc-1"],
            **fields,
        }
    )


FREE_TEXTS = [
    FreeText(
        "AssignCase",
        "reason",
        SHORT,
        False,
        lambda text: pb.AssignCaseRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            worker_id="sw-lcsw",
            reason=text,
        ),
    ),
    FreeText(
        "TransferCase",
        "reason",
        SHORT,
        True,
        lambda text: pb.TransferCaseRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            worker_id="sw-lcsw",
            reason=text,
        ),
    ),
    FreeText("MakeReferral", "service", SHORT, True, lambda text: _referral(service=text)),
    FreeText("MakeReferral", "reason", NOTE, True, lambda text: _referral(reason=text)),
    FreeText(
        "MakeReferral",
        "provider.name",
        SHORT,
        True,
        lambda text: _referral(provider=_provider(text)),
    ),
    FreeText(
        "AcceptReferral",
        "contact_person",
        SHORT,
        False,
        lambda text: pb.AcceptReferralRequest(
            context=_partner(),
            case_id="case-1",
            referral_id="ref-1",
            provider_id=COUNSELING_CENTRE.provider_id,
            contact_person=text,
        ),
    ),
    FreeText(
        "DeclineReferral",
        "reason",
        NOTE,
        True,
        lambda text: pb.DeclineReferralRequest(
            context=_partner(),
            case_id="case-1",
            referral_id="ref-1",
            provider_id=COUNSELING_CENTRE.provider_id,
            reason=text,
        ),
    ),
    FreeText(
        "CompleteReferral",
        "outcome",
        NOTE,
        True,
        lambda text: pb.CompleteReferralRequest(
            context=_partner(),
            case_id="case-1",
            referral_id="ref-1",
            provider_id=COUNSELING_CENTRE.provider_id,
            outcome=text,
        ),
    ),
    FreeText(
        "WithdrawReferral",
        "reason",
        NOTE,
        True,
        lambda text: pb.WithdrawReferralRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            referral_id="ref-1",
            reason=text,
        ),
    ),
    FreeText(
        "ScheduleService",
        "location.address",
        SHORT,
        False,
        lambda text: _schedule(location=pb.ServiceLocation(kind="provider_site", address=text)),
    ),
    FreeText(
        "ScheduleService",
        "provider.name",
        SHORT,
        True,
        lambda text: _schedule(provider=_provider(text)),
    ),
    FreeText(
        "RescheduleService",
        "reason",
        NOTE,
        True,
        lambda text: pb.RescheduleServiceRequest(
            context=command_context("case_manager"),
            case_id="case-1",
            service_id="svc-1",
            reason=text,
            **_window(),
        ),
    ),
    FreeText(
        "CancelService",
        "reason",
        NOTE,
        True,
        lambda text: pb.CancelServiceRequest(
            context=command_context("case_manager"),
            case_id="case-1",
            service_id="svc-1",
            cancelled_by="agency",
            reason=text,
        ),
    ),
    FreeText(
        "RecordServiceDelivered",
        "note",
        NOTE,
        False,
        lambda text: pb.RecordServiceDeliveredRequest(
            context=command_context("case_manager"),
            case_id="case-1",
            service_id="svc-1",
            note=text,
            starts_at=timestamp(TODAY - timedelta(hours=2)),
            ends_at=timestamp(TODAY - timedelta(hours=1)),
        ),
    ),
    FreeText(
        "ReleaseBudget",
        "reason",
        SHORT,
        True,
        lambda text: pb.ReleaseBudgetRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            budget_line="home-care-2026",
            reservation_id="res-1",
            reason=text,
        ),
    ),
    FreeText(
        "FileInsuranceClaim", "policy_number", SHORT, False, lambda text: _claim(policy_number=text)
    ),
    FreeText(
        "FileInsuranceClaim",
        "insurer.name",
        SHORT,
        True,
        lambda text: _claim(insurer=pb.Provider(provider_id="county-medicaid", name=text)),
    ),
    FreeText(
        "RecordClaimDecision",
        "reason",
        NOTE,
        False,
        lambda text: pb.RecordClaimDecisionRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            claim_id="claim-1",
            insurer_id="county-medicaid",
            decision="denied",
            amount_approved=usd(0),
            reason=text,
        ),
    ),
]

BAD: dict[str, Callable[[int], str]] = {
    "too-long": lambda bound: "x" * (bound + 1),
    "blank": lambda _bound: "   ",
    "control": lambda _bound: "call back\x07 later",
}


def _cases() -> list[Any]:
    return [
        pytest.param(text, how, id=f"{text.rpc}-{text.field}-{how}")
        for text in FREE_TEXTS
        for how in BAD
        if text.required or how != "blank"
    ]


@pytest.mark.parametrize(("text", "how"), _cases())
async def test_a_bad_free_text_is_refused_naming_it_and_nothing_is_written(
    stub: Stub, deps: Dependencies, text: FreeText, how: str
) -> None:
    before = await deps.store.last_position()
    code, status = await refusal(getattr(stub, text.rpc)(text.request(BAD[how](text.bound))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, status.message
    assert violated_fields(status) == [text.field]
    assert await deps.store.last_position() == before
