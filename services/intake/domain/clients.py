"""The client aggregate: one registration per client stream, checked against known clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from casetrail_platform.commands import AlreadyExists, InvalidCommand, require_not_before
from events.catalog.base import CaseEvent
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered
from events.envelope import EventMetadata, RecordedEvent
from events.errors import FieldProblem
from services.intake.domain.erasure import client_record
from services.intake.domain.errors import PossibleDuplicateClient
from services.intake.domain.matching import DuplicateCandidate, KnownClient, Probe, compare


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
    corrected_at: datetime | None = None
    """When the latest correction happened (as its command stated it); None: never corrected."""

    def known(self) -> KnownClient:
        """The client as the duplicate check sees them."""
        registration = self.registration
        return KnownClient(
            registration.client_id,
            registration.name,
            registration.date_of_birth,
            registration.identifiers,
            self.position,
        )

    def require_in_order(self, occurred_at: datetime | None) -> None:
        """A correction of the record happens after the registration and the latest correction.
        Stated as happening before, it would put the client's history out of order for good:
        audit's client record as it happened (``basis`` occurred) would fold the date it
        corrects after it, and show that one. ``occurred_at``: the command's moment
        (``CommandContext.moment``); ``None``: not known, not checked."""
        client_id = self.registration.client_id
        require_not_before(
            occurred_at, f"client {client_id} was registered", self.registered.occurred_at
        )
        require_not_before(
            occurred_at,
            f"the date of birth of client {client_id} was last corrected",
            self.corrected_at,
        )


def client_from(history: Sequence[RecordedEvent]) -> ClientRecord | None:
    record: ClientRecord | None = None
    for recorded in history:
        if isinstance(recorded.event, ClientRegistered):
            record = ClientRecord(
                recorded.event, recorded.metadata, recorded.position, recorded.sequence
            )
        elif record is not None and isinstance(recorded.event, ClientDateOfBirthCorrected):
            record = replace(
                record,
                registration=record.registration.updated(
                    date_of_birth=recorded.event.date_of_birth
                ),
                version=recorded.sequence,
                corrected_at=recorded.metadata.occurred_at,
            )
        elif record is not None:
            record = replace(record, version=recorded.sequence)
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


def acknowledged_before(
    probe: Probe, history: Sequence[RecordedEvent], before: int
) -> DuplicateCandidate | None:
    """The client of ``history`` as the registration at position ``before`` found them, when it
    recorded that ``probe``'s person is not them (``confirmed_not_duplicate_of``): their record
    as it stood before it, matched on ``probe``. A correction committed between the first
    attempt's search and its append passes over to the version before it, which that search
    saw. ``None`` once the client is erased: no one anybody can be a duplicate of (the
    directory forgets them too)."""
    if client_record(history).erased is not None:
        return None
    seen = [recorded for recorded in history if recorded.position < before]
    versions = (client_from(seen[:end]) for end in range(len(seen), 0, -1))  # latest first
    matches = (compare(probe, record.known()) for record in versions if record is not None)
    return next((match for match in matches if match is not None), None)
