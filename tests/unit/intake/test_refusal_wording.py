"""Intake's refusals of a field name it in words a person understands, never pydantic's."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from cli.rpc import Person
from tests.support.grpc import details, refusal
from tests.support.identity import acting
from tests.unit.intake.requests import marco, opening, query
from tests.unit.intake.support import Intake


async def test_breaking_the_glass_with_an_empty_reason_says_it_is_required(
    intake: Intake,
) -> None:
    """It said "reason: Input should be a valid string" (proto3's empty text is unset)."""
    client = await intake.stub.RegisterClient(marco())
    opened = await intake.stub.OpenCase(opening(client.client_id))
    on_call = Person("sw-on-call", "social_worker", entitlements=("break_glass",))
    for reason, problem in (
        ("", "required, 1-1000 characters"),
        ("r" * 1001, "at most 1000 characters"),
    ):
        request = intake_pb2.OpenEmergencyAccessRequest(
            context=acting(on_call, common_pb2.CommandContext(idempotency_key=f"g{len(reason)}")),
            case_id=opened.result.case_id,
            reason=reason,
        )
        code, status = await refusal(intake.stub.OpenEmergencyAccess(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        [bad] = details(status, error_details_pb2.BadRequest)
        said = {violation.field: violation.description for violation in bad.field_violations}
        assert said == {"reason": problem}
        assert "should" not in status.message


async def test_a_query_with_an_empty_id_says_the_ids_bounds(intake: Intake) -> None:
    """It said only "client_id: required" (casetrail_platform.commands.id_problem)."""
    for client_id, problem in (
        ("", "required, 1-64 characters"),
        ("c" * 65, "at most 64 characters"),
    ):
        request = intake_pb2.GetClientRequest(context=query("receptionist"), client_id=client_id)
        code, status = await refusal(intake.stub.GetClient(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        [bad] = details(status, error_details_pb2.BadRequest)
        said = {violation.field: violation.description for violation in bad.field_violations}
        assert said == {"client_id": problem}
