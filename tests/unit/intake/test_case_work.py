"""Intake's commands on a case's work (RecordInitialAssessment, GrantConsent, RevokeConsent) by
a case manager or social worker: only on the case assigned to them, as planning and
coordination hold them and as they read only those (before, their role alone let any of them
record a stranger's assessment and revoke its consents). Refused PERMISSION_DENIED
NO_RELATIONSHIP and recorded (``record.access_denied``) before anything tells whether the case
exists or what state it is in: an unknown case id, an assessed case and a closed one get the
same refusal (before: NOT_FOUND, INITIAL_ASSESSMENT_ALREADY_RECORDED naming the assessment,
CASE_CLOSED)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import uuid4

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.policy.guard import CASE_WORK_PURPOSE, access_stream
from casetrail_platform.policy.vocabulary import Action
from cli.rpc import Person
from events.catalog.access import RecordAccessDenied
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import CaseEvent, Role
from tests.support.grpc import details, refusal
from tests.support.identity import acting
from tests.unit.intake.requests import (
    a_case,
    assessing,
    granting,
    marco,
    open_case,
    opening,
    recorded_in_intake,
    until_status,
)
from tests.unit.intake.support import Intake, closed_by_planning, recorded

DANA = Person("cm-dana", "case_manager", team="team-east")
"""The case manager the cases are assigned to."""
STRANGER = Person("cm-elsewhere", "case_manager", team="team-east")
"""A case manager of the same team who carries none of the cases."""
SUCCESSOR = Person("cm-ravi", "case_manager", team="team-east")
"""Who a case is transferred to from Dana."""


def by(person: Person, key: str = "") -> common_pb2.CommandContext:
    return acting(person, common_pb2.CommandContext(idempotency_key=key or uuid4().hex))


def assessment_by(person: Person, case_id: str) -> intake_pb2.RecordInitialAssessmentRequest:
    request = assessing(case_id)
    request.context.CopyFrom(by(person))
    return request


def consent_by(person: Person, case_id: str, key: str = "") -> intake_pb2.GrantConsentRequest:
    request = granting(case_id)
    request.context.CopyFrom(by(person, key))
    return request


def revocation_by(person: Person, case_id: str, consent_id: str) -> intake_pb2.RevokeConsentRequest:
    return intake_pb2.RevokeConsentRequest(
        context=by(person), case_id=case_id, consent_id=consent_id, reason="Changed her mind"
    )


async def _from_coordination(intake: Intake, event: CaseEvent, sequence: int) -> None:
    """``event`` of coordination's case stream as the bus delivers it to intake's facts."""
    bus = intake.infra.inprocess_bus
    assert bus is not None
    publish = bus.publisher(intake.infra.topic).publish
    stream = f"case-{event.subject}"
    await publish([recorded(event, stream, sequence, source="casetrail/coordination")])


async def _assigned_to_dana(intake: Intake, case_id: str) -> None:
    assigned = CaseAssigned(
        case_id=case_id,
        worker_id=DANA.user_id,
        worker_role=Role.CASE_MANAGER,
        worker_team="team-east",
        reason="fits",
    )
    await _from_coordination(intake, assigned, 1)


async def _refused_and_recorded(
    intake: Intake,
    send: Callable[[Message], Awaitable[object]],
    request: Message,
    case_id: str,
    action: Action,
) -> bytes:
    """The refusal of a command on ``case_id``'s work (its status, to compare), once checked:
    NO_RELATIONSHIP, nothing written on the case, and one ``record.access_denied`` more under
    it naming the caller, the action and the rule."""
    before = await recorded_in_intake(intake, f"case-{case_id}")
    denied_before = len(await recorded_in_intake(intake, access_stream(case_id)))
    code, status = await refusal(send(request))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (case_id, code, status.message)
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "NO_RELATIONSHIP"
    assert await recorded_in_intake(intake, f"case-{case_id}") == before
    denied = await recorded_in_intake(intake, access_stream(case_id))
    assert len(denied) == denied_before + 1
    event = denied[-1].event
    assert isinstance(event, RecordAccessDenied)
    assert (event.accessor_id, event.action, event.purpose, event.rule) == (
        STRANGER.user_id,
        action.value,
        CASE_WORK_PURPOSE,
        "no-relationship",
    )
    return bytes(status.SerializeToString())


async def test_a_worker_records_a_cases_work_only_on_the_case_assigned_to_them(
    intake: Intake,
) -> None:
    case_id = await open_case(intake)
    await _assigned_to_dana(intake, case_id)
    granted = await intake.stub.GrantConsent(granting(case_id))

    await _refused_and_recorded(
        intake,
        intake.stub.RecordInitialAssessment,
        assessment_by(STRANGER, case_id),
        case_id,
        Action.RECORD_ASSESSMENT,
    )
    await _refused_and_recorded(
        intake,
        intake.stub.RevokeConsent,
        revocation_by(STRANGER, case_id, granted.consent_id),
        case_id,
        Action.RECORD_CONSENT,
    )
    await _refused_and_recorded(
        intake,
        intake.stub.GrantConsent,
        consent_by(STRANGER, case_id),
        case_id,
        Action.RECORD_CONSENT,
    )

    # The worker who carries the case records its assessment and its consents.
    await intake.stub.RecordInitialAssessment(assessment_by(DANA, case_id))
    await intake.stub.RevokeConsent(revocation_by(DANA, case_id, granted.consent_id))
    await intake.stub.GrantConsent(consent_by(DANA, case_id))
    recorded_by = {
        r.metadata.actor.user_id for r in await recorded_in_intake(intake, f"case-{case_id}")
    }
    assert STRANGER.user_id not in recorded_by
    assert DANA.user_id in recorded_by


async def test_before_any_worker_is_assigned_the_case_work_is_intakes(intake: Intake) -> None:
    """The case is intake's until coordination assigns it: its intake worker records the
    initial assessment and the consents, no case manager does."""
    case_id = await open_case(intake)
    await _refused_and_recorded(
        intake,
        intake.stub.RecordInitialAssessment,
        assessment_by(STRANGER, case_id),
        case_id,
        Action.RECORD_ASSESSMENT,
    )
    await intake.stub.RecordInitialAssessment(assessing(case_id, role="intake_worker"))
    await intake.stub.GrantConsent(granting(case_id))


async def _assessed_case_of_another_client(intake: Intake) -> str:
    client = await intake.stub.RegisterClient(marco(given="Anna", national_id="RSSNNA50A41F205X"))
    opened = await intake.stub.OpenCase(opening(client.client_id))
    await intake.stub.RecordInitialAssessment(assessing(opened.result.case_id))
    case_id: str = opened.result.case_id
    return case_id


async def test_an_unknown_case_is_refused_as_one_the_worker_may_not_act_on(
    intake: Intake,
) -> None:
    """Assessing a case they may not read told a worker whether the id was a case (NOT_FOUND),
    already assessed (naming the assessment) or closed: now the same recorded refusal."""
    assessed = await a_case(intake)
    closed = await _assessed_case_of_another_client(intake)
    bus = intake.infra.inprocess_bus
    assert bus is not None
    await bus.publisher(intake.infra.topic).publish([closed_by_planning(closed, sequence=3)])
    await until_status(intake, closed, "closed")
    unknown = "case-that-never-was"
    assessments = [
        await _refused_and_recorded(
            intake,
            intake.stub.RecordInitialAssessment,
            assessment_by(STRANGER, case_id),
            case_id,
            Action.RECORD_ASSESSMENT,
        )
        for case_id in (unknown, assessed, closed)
    ]
    assert assessments[0] == assessments[1] == assessments[2]
    consents = [
        await _refused_and_recorded(
            intake,
            intake.stub.GrantConsent,
            consent_by(STRANGER, case_id),
            case_id,
            Action.RECORD_CONSENT,
        )
        for case_id in (unknown, closed)
    ]
    revocations = [
        await _refused_and_recorded(
            intake,
            intake.stub.RevokeConsent,
            revocation_by(STRANGER, case_id, "consent-that-never-was"),
            case_id,
            Action.RECORD_CONSENT,
        )
        for case_id in (unknown, assessed)
    ]
    assert consents[0] == consents[1] == revocations[0] == revocations[1]


async def test_a_transfer_takes_the_case_work_from_the_worker_but_not_a_retrys_answer(
    intake: Intake,
) -> None:
    """Once coordination's transfer reaches intake's facts the previous worker records nothing
    more on the case; the retry of a consent they recorded before it gets its first answer,
    not the refusal a new one gets."""
    case_id = await open_case(intake)
    await _assigned_to_dana(intake, case_id)
    sent = consent_by(DANA, case_id, "dana-consent")
    first = await intake.stub.GrantConsent(sent)
    moved = CaseReassigned(
        case_id=case_id,
        previous_worker_id=DANA.user_id,
        worker_id=SUCCESSOR.user_id,
        worker_role=Role.CASE_MANAGER,
        worker_team="team-east",
        reason="Dana on leave",
    )
    await _from_coordination(intake, moved, 2)

    assert await intake.stub.GrantConsent(sent) == first
    code, status = await refusal(intake.stub.GrantConsent(consent_by(DANA, case_id)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"
    await intake.stub.RevokeConsent(revocation_by(SUCCESSOR, case_id, first.consent_id))
