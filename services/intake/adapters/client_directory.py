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

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import DataKeyError
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
MATCH_KEYS = "intake_client_match_keys"
"""One document per match key (a name with date of birth, an identifier), keyed by its keyed
hash, listing the clients it names: a lookup is a read by primary key, not a scan of clients."""

MATCH_KEY_OWNER = "casetrail.intake.match-keys"
"""The key-table owner whose data key the match keys' HMAC key is derived from: agency-wide
(a lookup compares clients with one another), never a client's (erasure destroys those)."""

_DERIVE_NONCE = b"match-key-v1"
"""12 bytes: the one message ever sealed under this nonce, so no nonce is reused."""


class MatchKeys:
    """Keyed hashes of match keys. They name a date of birth or an identifier, personal data
    sealed in the events: a document's key must not show them, and a plain hash of a date and
    a name (or of a nine-digit number) is reversed by trying them all."""

    def __init__(self, keyring: ClientKeyring | None) -> None:
        self._keyring = keyring
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            if self._keyring is None:
                # No keyring: nothing is sealed anywhere (protection is off), the events hold
                # these values in the clear already.
                self._secret = b"casetrail.intake.match-keys (unsealed deployment)"
            else:
                # Version 1, whatever comes later: the hashes of every document stay valid.
                self._keyring.encryption_key(MATCH_KEY_OWNER)
                sealer = self._keyring.decryption_key(MATCH_KEY_OWNER, 1)
                if sealer is None:
                    raise DataKeyError(f"the data key of {MATCH_KEY_OWNER!r} was destroyed")
                # AES-GCM's keystream under a fixed nonce is a pseudorandom function of the
                # data key (the AESGCM object does not hand the key out): the HMAC key.
                self._secret = sealer.encrypt(_DERIVE_NONCE, bytes(32), None)[:32]
        return self._secret

    def of(self, kind: str, key: str) -> str:
        return hmac.new(self._key(), f"{kind}|{key}".encode(), hashlib.sha256).hexdigest()

    def name(self, key: str) -> str:
        return self.of("name", key)

    def identifier(self, key: str) -> str:
        return self.of("identifier", key)


class ClientDirectoryProjection(Projection):
    name = "intake.client-directory-v3"
    """v2: names fold letters such as ł and ø and drop format characters (``matching.fold``);
    v3: match-key documents (``MATCH_KEYS``) for lookups by key. Each a new name, so a
    deployment rebuilds the directory from intake's store."""
    collections = (CLIENTS, MATCH_KEYS)

    def __init__(self, keyring: ClientKeyring | None = None) -> None:
        self.match_keys = MatchKeys(keyring)

    def use_keyring(self, keyring: ClientKeyring | None) -> None:
        """The deployment's keyring (a rebuild by the CLI constructs the projection bare)."""
        self.match_keys = MatchKeys(keyring)

    def keys_of(self, document: Document) -> list[str]:
        name = document.get("name_key")
        keys = [] if name is None else [self.match_keys.name(name)]
        return keys + [self.match_keys.identifier(key) for key in document["identifier_keys"]]

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, ClientRegistered):
            document = document_of(event, recorded.position)
            await transaction.put(CLIENTS, event.client_id, document)
            await _listing(transaction, self.keys_of(document), event.client_id, listed=True)
        elif isinstance(event, ClientDateOfBirthCorrected):
            # A client is matched on the date of birth the record says now; the position stays
            # the registration's (a retried registration's candidates are those before it).
            kept = await transaction.get(CLIENTS, event.client_id)
            if kept is not None:
                before = self.keys_of(kept)
                name = PersonName.model_validate(kept["name"])
                birth = event.date_of_birth
                kept["date_of_birth"] = birth.isoformat() if birth else None
                kept["name_key"] = name_key(name, birth)
                await transaction.put(CLIENTS, event.client_id, kept)
                after = self.keys_of(kept)
                gone = [key for key in before if key not in after]
                await _listing(transaction, gone, event.client_id, listed=False)
                await _listing(transaction, after, event.client_id, listed=True)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        # The directory holds who the client was in the clear (name, birth date, identifiers):
        # an erased client is no one anybody can be a duplicate of, and no match key names them.
        document = await transaction.get(CLIENTS, erased.client_id)
        if document is not None:
            await _listing(transaction, self.keys_of(document), erased.client_id, listed=False)
        await transaction.delete(CLIENTS, erased.client_id)


async def _listing(
    transaction: DocumentTransaction, keys: list[str], client_id: str, *, listed: bool
) -> None:
    """Add ``client_id`` to (or take it from) the match-key documents of ``keys``; a document
    naming no one is deleted. Ids are kept sorted, so any order of events builds the same."""
    for key in dict.fromkeys(keys):
        document = await transaction.get(MATCH_KEYS, key)
        ids = set() if document is None else set(document["client_ids"])
        changed = ids | {client_id} if listed else ids - {client_id}
        if changed == ids and document is not None:
            continue
        if changed:
            await transaction.put(MATCH_KEYS, key, {"client_ids": sorted(changed)})
        elif document is not None:
            await transaction.delete(MATCH_KEYS, key)


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
        self,
        store: EventStore,
        read_models: ReadModelStore,
        locks: Locks | None = None,
        keyring: ClientKeyring | None = None,
    ) -> None:
        self._store = store
        self._read_models = read_models
        self._projection = ClientDirectoryProjection(keyring)
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
        # Reads by primary key, whatever the number of clients: the match-key documents of the
        # probe's keys, then the clients they list.
        hashes = self._projection.match_keys
        keys = [hashes.identifier(key) for key in probe.identifier_keys]
        if probe.name_key is not None:
            keys.append(hashes.name(probe.name_key))
        listed = await self._read_models.get_many(MATCH_KEYS, keys) if keys else {}
        ids = sorted({client_id for doc in listed.values() for client_id in doc["client_ids"]})
        documents = (await self._read_models.get_many(CLIENTS, ids)).values() if ids else ()
        return candidates(
            probe,
            (known_client(document) for document in documents),
            excluding=excluding,
            registered_before=registered_before,
        )
