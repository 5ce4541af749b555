"""The directory of registered clients that duplicate detection searches.

It is a projection of intake's own store. The host's follower keeps it fresh in the background;
the registration handler also catches it up itself, inside ``ClientDirectory.registering``: the
locks of every key the new registration could match on (its name with date of birth, each of its
identifiers) are held from "bring the directory up to date" through the search and the append.
The locks are shared by every intake replica (PostgreSQL advisory locks on the distributed
backend, ``casetrail_platform.locking``), so no registration is checked against a directory that
misses an earlier registration of a possible duplicate, whichever replica took it (catching up only
ever moves the directory forward, whoever does it). Registrations that share no key do not wait for
each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

from casetrail_platform.locking.inprocess import InProcessLocks
from casetrail_platform.locking.port import Locks
from casetrail_platform.projections.port import (
    Document,
    DocumentTransaction,
    Projection,
    ReadModelStore,
)
from casetrail_platform.projections.runner import catch_up
from casetrail_platform.store.port import EventStore
from events.catalog.clients import (
    ClientDateOfBirthCorrected,
    ClientRegistered,
    PersonalIdentifier,
    PersonName,
)
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent
from services.intake.domain.matching import (
    DuplicateCandidate,
    KnownClient,
    Probe,
    candidates,
    identifier_key,
    name_key,
)

CLIENTS = "intake_clients"


class ClientDirectoryProjection(Projection):
    name = "intake.client-directory-v2"
    """v2: names fold letters such as ł and ø and drop format characters (``matching.fold``);
    a new name, so a deployment rebuilds the name keys from intake's store."""
    collections = (CLIENTS,)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, ClientRegistered):
            await transaction.put(CLIENTS, event.client_id, document_of(event, recorded.position))
        elif isinstance(event, ClientDateOfBirthCorrected):
            # A client is matched on the date of birth the record says now; the position stays
            # the registration's (a retried registration's candidates are those before it).
            document = await transaction.get(CLIENTS, event.client_id)
            if document is not None:
                name = PersonName.model_validate(document["name"])
                birth = event.date_of_birth
                document["date_of_birth"] = birth.isoformat() if birth else None
                document["name_key"] = name_key(name, birth)
                await transaction.put(CLIENTS, event.client_id, document)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        # The directory holds who the client was in the clear (name, birth date, identifiers):
        # an erased client is no one anybody can be a duplicate of.
        await transaction.delete(CLIENTS, erased.client_id)


def document_of(event: ClientRegistered, position: int) -> Document:
    return {
        "client_id": event.client_id,
        "name": event.name.model_dump(mode="json"),
        "date_of_birth": event.date_of_birth.isoformat() if event.date_of_birth else None,
        "identifiers": [identifier.model_dump(mode="json") for identifier in event.identifiers],
        "position": position,
        "name_key": name_key(event.name, event.date_of_birth),
        "identifier_keys": [identifier_key(identifier) for identifier in event.identifiers],
    }


def known_client(document: Document) -> KnownClient:
    birth = document.get("date_of_birth")
    return KnownClient(
        client_id=document["client_id"],
        name=PersonName.model_validate(document["name"]),
        date_of_birth=date.fromisoformat(birth) if birth else None,
        identifiers=tuple(PersonalIdentifier.model_validate(i) for i in document["identifiers"]),
        position=int(document["position"]),
    )


class ClientDirectory:
    def __init__(
        self, store: EventStore, read_models: ReadModelStore, locks: Locks | None = None
    ) -> None:
        self._store = store
        self._read_models = read_models
        self._projection = ClientDirectoryProjection()
        self._locks = locks or InProcessLocks()

    @asynccontextmanager
    async def registering(self, probe: Probe) -> AsyncIterator[None]:
        """Serialises the check-then-append of registrations that could match each other,
        across every replica sharing the locks."""
        keys = [f"intake.client.identifier:{key}" for key in probe.identifier_keys]
        if probe.name_key is not None:
            keys.append(f"intake.client.name:{probe.name_key}")
        async with self._locks.holding(keys):
            yield

    @property
    def projection(self) -> Projection:
        return self._projection

    async def refresh(self) -> int:
        """Apply every registration the directory has not seen yet (read-your-writes)."""
        return await catch_up(self._store, self._read_models, self._projection)

    async def candidates(
        self,
        probe: Probe,
        *,
        excluding: str | None = None,
        registered_before: int | None = None,
    ) -> list[DuplicateCandidate]:
        documents: list[Document] = []
        key = probe.name_key
        if key is not None:
            documents += await self._read_models.find(CLIENTS, equals={"name_key": key})
        for identifier in probe.identifier_keys:
            documents += await self._read_models.find(
                CLIENTS, contains={"identifier_keys": identifier}
            )
        return candidates(
            probe,
            (known_client(document) for document in documents),
            excluding=excluding,
            registered_before=registered_before,
        )
