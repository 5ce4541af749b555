"""A new client's new case opened at intake over gRPC, for tests and benchmarks that need cases
and nothing particular in them."""

from __future__ import annotations

import uuid

from casetrail.intake.v1 import intake_pb2
from cli.rpc import Connection, Person, command


async def opened_case(stubs: Connection, receptionist: Person) -> str:
    """A client registered by ``receptionist`` (a unique name and identifier), and a case
    opened for them on a self-referral for one need; the case's id."""
    intake = stubs.as_(receptionist).intake
    client = await intake.RegisterClient(
        intake_pb2.RegisterClientRequest(
            context=command(_key()),
            name=intake_pb2.PersonName(given_names="Ada", family_name=f"Case-{_key()[:8]}"),
            date_of_birth="1950-03-14",
            identifiers=[intake_pb2.PersonalIdentifier(scheme="national_id", value=_key())],
        )
    )
    opened = await intake.OpenCase(
        intake_pb2.OpenCaseRequest(
            context=command(_key()),
            client_id=client.client_id,
            referral_source=intake_pb2.ReferralSource(kind="self"),
            presenting_needs=[intake_pb2.PresentingNeed(category="socialisation")],
        )
    )
    case_id: str = opened.result.case_id
    return case_id


def _key() -> str:
    return uuid.uuid4().hex
