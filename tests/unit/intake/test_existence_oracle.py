"""A caller the policy refuses learns nothing of whether a case or a client exists: intake's
GetCase and GetClient decide before they say NOT_FOUND, as planning's GetCaseView does
(README: "Reads are decided before anything is looked up")."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.policy.guard import access_stream
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied
from tests.support.grpc import details, refusal
from tests.support.identity import acting
from tests.unit.intake.requests import marco, open_case, recorded_in_intake
from tests.unit.intake.support import Intake


def case_manager() -> common_pb2.QueryContext:
    """A case manager who carries none of the cases: no rule lets them read one."""
    return acting(
        Person("user-cm-elsewhere", "case_manager"),
        common_pb2.QueryContext(purpose="direct_care"),
    )


async def _refused_and_recorded(intake: Intake, call: object, subject: str) -> str:
    code, status = await refusal(call)  # type: ignore[arg-type]
    assert code == grpc.StatusCode.PERMISSION_DENIED, (subject, code, status.message)
    (info,) = details(status, error_details_pb2.ErrorInfo)
    denied = await recorded_in_intake(intake, access_stream(subject))
    assert [type(r.event) for r in denied] == [RecordAccessDenied], subject
    return f"{info.reason}: {status.message}"


async def test_an_unknown_case_is_refused_as_a_real_one_not_found(intake: Intake) -> None:
    real = await open_case(intake)
    answers = [
        await _refused_and_recorded(
            intake,
            intake.stub.GetCase(intake_pb2.GetCaseRequest(context=case_manager(), case_id=case_id)),
            case_id,
        )
        for case_id in (real, "case-that-never-was")
    ]
    assert answers[0] == answers[1]


async def test_an_unknown_client_is_refused_as_a_real_one_not_found(intake: Intake) -> None:
    without_case = (await intake.stub.RegisterClient(marco())).client_id
    answers = [
        await _refused_and_recorded(
            intake,
            intake.stub.GetClient(
                intake_pb2.GetClientRequest(context=case_manager(), client_id=client_id)
            ),
            client_id,
        )
        for client_id in (without_case, "client-that-never-was")
    ]
    assert answers[0] == answers[1]
