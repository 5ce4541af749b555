"""A token's ``sub`` names someone within its agency only: a caller of another agency whose
``sub`` is a grantee's or the client's is someone else, and reads nothing under their rights
(``decide.relationships``)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.policy.guard import access_stream
from casetrail_platform.policy.vocabulary import Action
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied
from events.catalog.emergency import EmergencyAccessClosed
from tests.support.grpc import details, refusal
from tests.support.identity import acting
from tests.unit.intake.requests import marco, opening, recorded_in_intake
from tests.unit.intake.support import Intake

ON_CALL = Person("sw-on-call", "social_worker", entitlements=("break_glass",))
ELSEWHERE = "westside-dss"


async def test_an_emergency_access_is_its_grantees_of_the_agency_not_a_namesakes(
    intake: Intake,
) -> None:
    """The grant was matched on ``sub`` alone: another agency's social worker of the on-call
    worker's ``sub`` read the case, sensitive needs included, under the access."""
    client = await intake.stub.RegisterClient(marco())
    opened = await intake.stub.OpenCase(opening(client.client_id))
    case_id = opened.result.case_id
    await intake.stub.OpenEmergencyAccess(
        intake_pb2.OpenEmergencyAccessRequest(
            context=acting(ON_CALL, common_pb2.CommandContext(idempotency_key="glass-1")),
            case_id=case_id,
            reason="Client unreachable, fall alarm raised",
        )
    )

    def reading(person: Person) -> intake_pb2.GetCaseRequest:
        return intake_pb2.GetCaseRequest(
            context=acting(person, common_pb2.QueryContext(purpose="emergency")),
            case_id=case_id,
        )

    granted = await intake.stub.GetCase(reading(ON_CALL))
    assert granted.record.case_id == case_id
    namesake = Person(ON_CALL.user_id, "social_worker", agency=ELSEWHERE, team="team-east")
    code, status = await refusal(intake.stub.GetCase(reading(namesake)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"


async def test_an_emergency_access_is_closed_by_its_grantee_of_the_agency_not_a_namesake(
    intake: Intake,
) -> None:
    """The closer was taken for the grantee on ``sub`` alone: another agency's caller of the
    on-call worker's ``sub`` closed the access, answered OK, and the closing was recorded as
    the grantee's (``closed_by_id``). Refused as anyone else who may not oversee the case is,
    and recorded under the case; the access stays open, and the grantee still closes it."""
    client = await intake.stub.RegisterClient(marco())
    opened = await intake.stub.OpenCase(opening(client.client_id))
    case_id = opened.result.case_id
    glass = await intake.stub.OpenEmergencyAccess(
        intake_pb2.OpenEmergencyAccessRequest(
            context=acting(ON_CALL, common_pb2.CommandContext(idempotency_key="glass-1")),
            case_id=case_id,
            reason="Client unreachable, fall alarm raised",
        )
    )

    def closing(person: Person, key: str) -> intake_pb2.CloseEmergencyAccessRequest:
        return intake_pb2.CloseEmergencyAccessRequest(
            context=acting(person, common_pb2.CommandContext(idempotency_key=key)),
            case_id=case_id,
            emergency_access_id=glass.emergency_access_id,
        )

    written = await recorded_in_intake(intake, f"case-{case_id}")
    namesakes = {
        # Neither role nor relationship lets them oversee the case.
        Person(ON_CALL.user_id, "social_worker", agency=ELSEWHERE): "ROLE_NOT_ALLOWED",
        Person(ON_CALL.user_id, "supervisor", agency=ELSEWHERE, team="team-east"): (
            "NO_RELATIONSHIP"
        ),
    }
    for namesake, reason in namesakes.items():
        code, status = await refusal(
            intake.stub.CloseEmergencyAccess(closing(namesake, f"close-{namesake.role}"))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED, namesake
        assert details(status, error_details_pb2.ErrorInfo)[0].reason == reason
    assert await recorded_in_intake(intake, f"case-{case_id}") == written
    denied = [r.event for r in await recorded_in_intake(intake, access_stream(case_id))]
    assert [
        (d.accessor_id, d.accessor_agency_id, d.action)
        for d in denied
        if isinstance(d, RecordAccessDenied)
    ] == [(ON_CALL.user_id, ELSEWHERE, Action.CLOSE_EMERGENCY_ACCESS.value)] * 2

    reading = intake_pb2.GetCaseRequest(
        context=acting(ON_CALL, common_pb2.QueryContext(purpose="emergency")), case_id=case_id
    )
    assert (await intake.stub.GetCase(reading)).record.case_id == case_id
    await intake.stub.CloseEmergencyAccess(closing(ON_CALL, "close-grantee"))
    closed = (await recorded_in_intake(intake, f"case-{case_id}"))[-1].event
    assert isinstance(closed, EmergencyAccessClosed)
    assert closed.closed_by_id == ON_CALL.user_id


async def test_a_client_is_the_agencys_client_not_another_agencys_namesake(
    intake: Intake,
) -> None:
    """A client's token is the agency's (its issuer names the agency): another agency's token
    whose ``sub`` is the client's id read the client's record as theirs."""
    client = await intake.stub.RegisterClient(marco())
    await intake.stub.OpenCase(opening(client.client_id))

    def as_client(agency: str) -> intake_pb2.GetClientRequest:
        person = Person(client.client_id, "client", agency=agency)
        return intake_pb2.GetClientRequest(
            context=acting(person, common_pb2.QueryContext(purpose="client_request")),
            client_id=client.client_id,
        )

    own = await intake.stub.GetClient(as_client("eastbay-dss"))
    assert own.client.name.family_name == "Bellini"
    code, status = await refusal(intake.stub.GetClient(as_client(ELSEWHERE)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"
