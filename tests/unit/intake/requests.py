"""Intake's gRPC requests as its tests send them (each names who acts, ``tests.support.identity``),
and a few steps through the API: a client registered and a case opened (and assessed), a case
read back, waited for, the events intake recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.infrastructure import open_event_store
from cli.rpc import Person
from events.envelope import RecordedEvent
from tests.support.identity import acting
from tests.unit.intake.support import Intake


def command(role: str = "intake_worker", key: str = "") -> common_pb2.CommandContext:
    return acting(
        Person(f"user-{role}", role),
        common_pb2.CommandContext(idempotency_key=key or f"key-{next(_keys)}"),
    )


PURPOSE_OF = {"auditor": "confidentiality_review", "coordinator": "coordination"}
"""The purpose each role reads with in these tests (casetrail_platform/policy/matrix.py)."""


def query(role: str = "auditor", user: str = "") -> common_pb2.QueryContext:
    return acting(
        Person(user or f"user-{role}", role, agency=user or "eastbay-dss"),
        common_pb2.QueryContext(purpose=PURPOSE_OF.get(role, "direct_care")),
    )


_keys = iter(range(1_000_000))


def marco(
    given: str = "Marco",
    family: str = "Bellini",
    birth: str = "1941-06-02",
    national_id: str = "BLLMRC41H02F205X",
) -> intake_pb2.RegisterClientRequest:
    identifiers = [intake_pb2.PersonalIdentifier(scheme="national_id", value=national_id)]
    return intake_pb2.RegisterClientRequest(
        context=command("receptionist"),
        name=intake_pb2.PersonName(given_names=given, family_name=family),
        date_of_birth=birth,
        identifiers=identifiers if national_id else [],
        contact=intake_pb2.ContactDetails(phone="+39 02 555 0199"),
        preferred_language="it",
    )


def opening(client_id: str) -> intake_pb2.OpenCaseRequest:
    return intake_pb2.OpenCaseRequest(
        context=command("receptionist"),
        client_id=client_id,
        referral_source=intake_pb2.ReferralSource(kind="hospital", name="St Mary"),
        presenting_needs=[intake_pb2.PresentingNeed(category="home_care")],
    )


def assessing(
    case_id: str, role: str = "intake_worker"
) -> intake_pb2.RecordInitialAssessmentRequest:
    return intake_pb2.RecordInitialAssessmentRequest(
        context=command(role),
        case_id=case_id,
        factors=intake_pb2.AssessmentFactors(psychological="Fears falling again"),
        strengths=["Good relationship with his daughter"],
        resources=["State pension"],
        risks=[intake_pb2.Risk(description="Fall risk at home", severity="high")],
        needs=[intake_pb2.AssessedNeed(category="home_care", urgency="immediate")],
    )


async def open_case(intake: Intake) -> str:
    client = await intake.stub.RegisterClient(marco())
    opened: intake_pb2.OpenCaseResponse = await intake.stub.OpenCase(opening(client.client_id))
    return opened.result.case_id


async def get_case(intake: Intake, case_id: str) -> intake_pb2.CaseRecord:
    response: intake_pb2.GetCaseResponse = await intake.stub.GetCase(
        intake_pb2.GetCaseRequest(context=query(), case_id=case_id)
    )
    return response.record


async def until_status(intake: Intake, case_id: str, status: str) -> None:
    """Wait for the bus subscription to deliver (a readiness wait, not a timing assertion)."""
    for _ in range(500):
        if (await get_case(intake, case_id)).status == status:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"case {case_id} never became {status}")


async def recorded_in_intake(intake: Intake, stream: str) -> list[RecordedEvent]:
    store, _checkpoints, close = await open_event_store(intake.infra, "intake")
    try:
        return await store.read_stream(stream)
    finally:
        await close()


PARTNER = "bay-recovery"


def stamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def granting(case_id: str, **changes: Any) -> intake_pb2.GrantConsentRequest:
    request = intake_pb2.GrantConsentRequest(
        context=command(),
        case_id=case_id,
        recipient=intake_pb2.ConsentRecipient(
            kind="agency", recipient_id=PARTNER, name="Bay Recovery Center"
        ),
        purpose="coordination",
        scope=["identity", "referrals", "services"],
        categories=["substance_use"],
        expires_at=stamp(datetime.now(UTC) + timedelta(days=90)),
        document_reference="scan://consents/2026/0001.pdf",
    )
    for name, value in changes.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]
        elif isinstance(value, Message):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


async def a_case(intake: Intake) -> str:
    client = await intake.stub.RegisterClient(marco())
    opened = await intake.stub.OpenCase(opening(client.client_id))
    await intake.stub.RecordInitialAssessment(assessing(opened.result.case_id))
    case_id: str = opened.result.case_id
    return case_id


def erasing(client_id: str, key: str = "") -> intake_pb2.EraseClientRequest:
    return intake_pb2.EraseClientRequest(
        context=command("supervisor", key),
        client_id=client_id,
        request_reference="dms://privacy/requests/7",
    )
