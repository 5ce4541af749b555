"""The client aggregate: one registration per client stream, checked against known clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from casetrail_platform.commands import AlreadyExists, InvalidCommand
from events.catalog.base import CaseEvent
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered
from events.envelope import EventMetadata, RecordedEvent
from events.errors import FieldProblem
from services.intake.domain.errors import PossibleDuplicateClient
from services.intake.domain.matching import DuplicateCandidate, Probe


def client_stream(client_id: str) -> str:
    return f"client-{client_id}"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    registration: ClientRegistered
    """As registered, with the corrections recorded since (its date of birth the corrected
    one): what the record says of the client now."""
    registered: EventMetadata
    position: int
    version: int


def client_from(history: Sequence[RecordedEvent]) -> ClientRecord | None:
    record: ClientRecord | None = None
    for recorded in history:
        if isinstance(recorded.event, ClientRegistered):
            record = ClientRecord(
                recorded.event, recorded.metadata, recorded.position, recorded.sequence
            )
        elif record is not None and isinstance(recorded.event, ClientDateOfBirthCorrected):
            corrected = record.registration.updated(date_of_birth=recorded.event.date_of_birth)
            record = ClientRecord(corrected, record.registered, record.position, recorded.sequence)
        elif record is not None:
            record = ClientRecord(
                record.registration, record.registered, record.position, recorded.sequence
            )
    return record


def probe_of(registration: ClientRegistered) -> Probe:
    return Probe(registration.name, registration.date_of_birth, registration.identifiers)


def check_date_of_birth(date_of_birth: date | None, today: date) -> None:
    if date_of_birth is not None and date_of_birth > today:
        raise InvalidCommand([FieldProblem("date_of_birth", "must not be in the future")])


def decide_registration(
    history: Sequence[RecordedEvent],
    registration: ClientRegistered,
    candidates: Sequence[DuplicateCandidate],
    confirmed_not_duplicate: bool,
) -> list[CaseEvent]:
    """Register the client unless they may already be one and the caller has not said no.

    When the caller has said no, the registration records whom this person is not.
    """
    if history:
        raise AlreadyExists("client", registration.client_id)
    if candidates and not confirmed_not_duplicate:
        raise PossibleDuplicateClient(candidates)
    others = tuple(candidate.client_id for candidate in candidates)
    return [registration.updated(confirmed_not_duplicate_of=others)]
