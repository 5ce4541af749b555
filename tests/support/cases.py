"""New clients and cases at intake over gRPC, for tests and benchmarks that need them and
nothing particular in them: a fresh idempotency key (``key``), a registration request
(``registration``), a registered client's case (``opened_case``)."""

from __future__ import annotations

import uuid

from casetrail.intake.v1 import intake_pb2
from cli.rpc import Connection, Person, command


def key() -> str:
    """A fresh idempotency key (or unique value)."""
    return uuid.uuid4().hex


def registration(
    family_name: str = "", born: str = "1950-03-14"
) -> intake_pb2.RegisterClientRequest:
    """A client's registration, with a unique national id and, unless named, family name."""
    return intake_pb2.RegisterClientRequest(
        context=command(key()),
        name=intake_pb2.PersonName(
            given_names="Giulia", family_name=family_name or f"Conti-{key()[:8]}"
        ),
        date_of_birth=born,
        identifiers=[intake_pb2.PersonalIdentifier(scheme="national_id", value=key())],
    )


async def opened_case(stubs: Connection, receptionist: Person) -> str:
    """A client registered by ``receptionist`` (``registration``), and a case opened for them
    on a self-referral for one need; the case's id."""
    intake = stubs.as_(receptionist).intake
    client = await intake.RegisterClient(registration())
    opened = await intake.OpenCase(
        intake_pb2.OpenCaseRequest(
            context=command(key()),
            client_id=client.client_id,
            referral_source=intake_pb2.ReferralSource(kind="self"),
            presenting_needs=[intake_pb2.PresentingNeed(category="socialisation")],
        )
    )
    case_id: str = opened.result.case_id
    return case_id
