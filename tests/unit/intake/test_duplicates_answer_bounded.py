"""The possible duplicates an answer names (FindPossibleDuplicates', RegisterClient's
acknowledged ones) are as many as one gRPC answer carries (README, "Answers are bounded"): each
is answered with the identifiers it shares, up to about 190 KB, so the 50 a lookup answers were
past gRPC's 4 MiB, an answer that never reached the caller after every read was recorded; a
registration's answer (its client id) was lost so, and its retry too."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from casetrail.intake.v1 import intake_pb2
from casetrail_platform.infrastructure import open_event_store
from casetrail_platform.store.port import NO_STREAM
from events.catalog.base import Role
from events.catalog.clients import ClientRegistered, PersonalIdentifier, PersonName
from events.envelope import Actor, EventMetadata, NewEvent
from services.intake.app.handlers import SOURCE
from services.intake.domain.clients import client_stream
from tests.unit.intake.requests import command, marco, query
from tests.unit.intake.support import Intake

GRPC_ANSWER_BYTES = 4 * 1024 * 1024
WIDE = "\u6f22"
"""Three bytes in UTF-8: 100 identifiers of 500 of them still fit a registration's event."""
NAMESAKES = 30
"""Clients sharing the identifiers: at about 150 KB each, 28 were past 4 MiB."""


def identifiers() -> list[PersonalIdentifier]:
    return [
        PersonalIdentifier(scheme=f"registry-{index}", value=f"{index:02}{WIDE * 498}")
        for index in range(100)
    ]


def proto_identifiers() -> list[intake_pb2.PersonalIdentifier]:
    return [intake_pb2.PersonalIdentifier(scheme=i.scheme, value=i.value) for i in identifiers()]


async def _registered_sharing_the_identifiers(intake: Intake) -> list[str]:
    """``NAMESAKES`` clients registered with the same 100 long identifiers (written to the store
    directly: each registration through the API reads and records all those before it)."""
    store, _checkpoints, close = await open_event_store(intake.infra, "intake")
    client_ids = [f"c-shared-{index:02}" for index in range(NAMESAKES)]
    try:
        for client_id in client_ids:
            registered = ClientRegistered(
                client_id=client_id,
                name=PersonName(given_names="Anna", family_name=client_id),
                identifiers=tuple(identifiers()),
            )
            metadata = EventMetadata(
                SOURCE, Actor("reception", Role.RECEPTIONIST), datetime.now(UTC), uuid4()
            )
            await store.append(
                client_stream(client_id), [NewEvent(registered, metadata)], NO_STREAM
            )
    finally:
        await close()
    return client_ids


async def test_the_candidates_of_an_answer_are_as_many_as_it_carries(intake: Intake) -> None:
    client_ids = await _registered_sharing_the_identifiers(intake)

    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("coordinator"), identifiers=proto_identifiers()
        )
    )

    assert found.truncated
    assert found.ByteSize() < GRPC_ANSWER_BYTES
    listed = [candidate.client_id for candidate in found.candidates]
    assert 0 < len(listed) < NAMESAKES
    assert listed == client_ids[: len(listed)]  # in registration order, the earliest first

    request = marco(given="Anna", birth="", national_id="")
    request.context.CopyFrom(command("coordinator", key="registering-anna"))
    request.identifiers.extend(proto_identifiers())
    request.confirmed_not_duplicate = True
    registered = await intake.stub.RegisterClient(request)
    assert registered.acknowledged_duplicates_truncated
    assert registered.ByteSize() < GRPC_ANSWER_BYTES
    acknowledged = [candidate.client_id for candidate in registered.acknowledged_duplicates]
    assert acknowledged == listed
    # A retry is answered alike.
    assert await intake.stub.RegisterClient(request) == registered
