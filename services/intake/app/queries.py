"""Intake's reads. Each names who asks and why (need-to-know) and checks the reader's role.

``required_id`` and ``probe_from`` check a query's fields without I/O; the gRPC entrypoint runs
them too, to refuse a request's bad fields together with its context's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from events.catalog.clients import PersonalIdentifier, PersonName
from events.catalog.values import CatalogValue
from events.commands import InvalidCommand, NotFound
from events.errors import FieldProblem
from events.queries import QueryContext
from events.store.port import EventStore
from services.intake.adapters.case_closures import Closure, ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app.commands import FindDuplicates
from services.intake.app.validation import build, fields_of
from services.intake.domain.cases import CaseRecord, case_from, case_stream
from services.intake.domain.clients import ClientRecord, client_from, client_stream
from services.intake.domain.matching import DuplicateCandidate, Probe
from services.intake.domain.permissions import Action, require_role


@dataclass(frozen=True, slots=True)
class CaseView:
    case: CaseRecord
    client: ClientRecord | None
    closures: tuple[Closure, ...]

    @property
    def status(self) -> str:
        return "closed" if self.case.is_closed(len(self.closures)) else "open"


class _ProbeInput(CatalogValue):
    name: PersonName | None = None
    date_of_birth: date | None = None
    identifiers: tuple[PersonalIdentifier, ...] = ()


async def get_client(store: EventStore, reader: QueryContext, client_id: str) -> ClientRecord:
    require_role(reader.actor.role, Action.READ_CLIENT)
    required_id("client_id", client_id)
    client = client_from(await store.read_stream(client_stream(client_id)))
    if client is None:
        raise NotFound("client", client_id)
    return client


def probe_from(query: FindDuplicates) -> Probe:
    details = build(_ProbeInput, fields_of(query))
    probe = Probe(details.name, details.date_of_birth, details.identifiers)
    if probe.name_key is None and not probe.identifiers:
        raise InvalidCommand(
            [
                FieldProblem(
                    "identifiers",
                    "give a name with a date of birth, or at least one identifier: a name"
                    " alone never identifies a person",
                )
            ]
        )
    return probe


async def find_possible_duplicates(
    directory: ClientDirectory, reader: QueryContext, query: FindDuplicates
) -> list[DuplicateCandidate]:
    require_role(reader.actor.role, Action.READ_CLIENT)
    probe = probe_from(query)
    # Catching up is safe beside registrations and other replicas (it only moves forward).
    await directory.refresh()
    return await directory.candidates(probe)


async def get_case(
    store: EventStore, closures: ClosureLog, reader: QueryContext, case_id: str
) -> CaseView:
    require_role(reader.actor.role, Action.READ_CASE)
    required_id("case_id", case_id)
    case = case_from(await store.read_stream(case_stream(case_id)))
    if case is None:
        raise NotFound("case", case_id)
    client = client_from(await store.read_stream(client_stream(case.opened.client_id)))
    return CaseView(case, client, await closures.closures(case_id))


def required_id(field: str, value: str) -> str:
    if not value:
        raise InvalidCommand([FieldProblem(field, "required")])
    return value
