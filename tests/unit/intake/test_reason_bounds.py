"""The free-text reason of a consent's revocation and of a retention hold's release is checked
with the rest of the request, before anything is decided: a reason over the catalog's bound,
or blank, is INVALID_ARGUMENT naming ``reason``, never INTERNAL, and nothing is written."""

from __future__ import annotations

import grpc
import pytest

from casetrail.intake.v1 import intake_pb2
from tests.support.grpc import refusal, violated_fields
from tests.unit.intake.requests import a_case, command, granting, marco
from tests.unit.intake.support import Intake


@pytest.mark.parametrize("reason", ["x" * 501, "   "], ids=["too-long", "blank"])
async def test_a_bad_revocation_reason_is_refused_naming_it(intake: Intake, reason: str) -> None:
    case_id = await a_case(intake)
    granted = await intake.stub.GrantConsent(granting(case_id))
    code, status = await refusal(
        intake.stub.RevokeConsent(
            intake_pb2.RevokeConsentRequest(
                context=command("social_worker"),
                case_id=case_id,
                consent_id=granted.consent_id,
                reason=reason,
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, status.message
    assert violated_fields(status) == ["reason"]


@pytest.mark.parametrize("reason", ["x" * 20_001, "   "], ids=["too-long", "blank"])
async def test_a_bad_release_reason_is_refused_naming_it(intake: Intake, reason: str) -> None:
    client_id = (await intake.stub.RegisterClient(marco())).client_id
    held = await intake.stub.PlaceRetentionHold(
        intake_pb2.PlaceRetentionHoldRequest(
            context=command("supervisor"), client_id=client_id, legal_basis="inquiry 2026-17"
        )
    )
    code, status = await refusal(
        intake.stub.ReleaseRetentionHold(
            intake_pb2.ReleaseRetentionHoldRequest(
                context=command("supervisor"),
                client_id=client_id,
                hold_id=held.hold_id,
                reason=reason,
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, status.message
    assert violated_fields(status) == ["reason"]
