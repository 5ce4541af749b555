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
from casetrail_platform.keys.off_loop import sealing
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
    FoundCandidates,
    KnownClient,
    Probe,
    candidates,
    identifier_key,
    name_key,
)

CLIENTS = "intake_clients"
MATCH_KEYS = "intake_client_match_keys"
"""One document per match key (a name with date of birth, an identifier), keyed by its keyed
hash, listing the clients it names (``clients``: [registration position, client id] pairs in
registration order): a lookup is a read by primary key, not a scan of clients."""

CANDIDATES_PER_KEY = 50
"""At most this many clients of one match key are candidates of a lookup: the most recently
registered ones (before ``registered_before``, for a retried registration), and the lookup says
it was truncated. A key naming more (an identifier typed as a placeholder, a very common name
on a common birth date) would otherwise have every lookup read and compare them all, and every
registration matching it answer them all."""

CANDIDATES_PER_LOOKUP = 50
"""At most this many candidates in all, however many match keys named them (a probe has up to
100 identifiers, each naming up to ``CANDIDATES_PER_KEY``): each candidate is answered with its
name and the identifiers it shares (up to about 60 KB), and an answer past gRPC's 4 MiB never
reaches the caller, after every candidate's read was recorded. Taken from the keys naming
fewest clients first (ties: the key with the latest registration first), each key's most
recently registered first."""

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

    async def ready(self) -> None:
        """Derive the HMAC key, asking the key table and the KEK (a database and a KMS) in a
        worker thread unless the keyring has the key cached: never on the event loop. Called at
        start-up (``ClientDirectory.start``) and before every use."""
        if self._secret is None:
            self._secret = await sealing(self._derive)

    def _derive(self, cached_only: bool) -> bytes:
        if self._keyring is None:
            # No keyring: nothing is sealed anywhere (protection is off), the events hold
            # these values in the clear already.
            return b"casetrail.intake.match-keys (unsealed deployment)"
        # Version 1, whatever comes later: the hashes of every document stay valid.
        self._keyring.encryption_key(MATCH_KEY_OWNER, cached_only=cached_only)
        sealer = self._keyring.decryption_key(MATCH_KEY_OWNER, 1, cached_only=cached_only)
        if sealer is None:
            raise DataKeyError(f"the data key of {MATCH_KEY_OWNER!r} was destroyed")
        # AES-GCM's keystream under a fixed nonce is a pseudorandom function of the data key
        # (the AESGCM object does not hand the key out): the HMAC key.
        return sealer.encrypt(_DERIVE_NONCE, bytes(32), None)[:32]

    def _key(self) -> bytes:
        if self._secret is None:
            raise RuntimeError("MatchKeys.ready() was not awaited before hashing")
        return self._secret

    def of(self, kind: str, key: str) -> str:
        return hmac.new(self._key(), f"{kind}|{key}".encode(), hashlib.sha256).hexdigest()

    def name(self, key: str) -> str:
        return self.of("name", key)

    def identifier(self, key: str) -> str:
        return self.of("identifier", key)


class ClientDirectoryProjection(Projection):
    name = "intake.client-directory-v6"
    """v2: names fold letters such as ł and ø and drop format characters (``matching.fold``);
    v3: match-key documents (``MATCH_KEYS``) for lookups by key; v4: they hold each client's
    registration position (``CANDIDATES_PER_KEY``); v5: names drop every default-ignorable
    code point (``matching.invisible``); v6: names drop control characters but tab, line feed
    and carriage return, and identifiers every invisible character (``matching.identifier_key``).
    Each a new name, so a deployment rebuilds the directory from intake's store."""
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
        await self.match_keys.ready()
        event = recorded.event
        if isinstance(event, ClientRegistered):
            document = document_of(event, recorded.position)
            keys = self.keys_of(document)
            # Rebuilt under a new name, the directory finds the entry the layout before it
            # left, with the keys that layout listed the client under: those it computes no
            # more are taken away, or they would name the client after an erasure.
            left = await transaction.get(CLIENTS, event.client_id)
            if left is not None:
                gone = [key for key in self.keys_of(left) if key not in keys]
                await _listing(transaction, gone, left, listed=False)
            await transaction.put(CLIENTS, event.client_id, document)
            await _listing(transaction, keys, document, listed=True)
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
                await _listing(transaction, gone, kept, listed=False)
                await _listing(transaction, after, kept, listed=True)

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        # The directory holds who the client was in the clear (name, birth date, identifiers):
        # an erased client is no one anybody can be a duplicate of, and no match key names them.
        await self.match_keys.ready()
        document = await transaction.get(CLIENTS, erased.client_id)
        if document is not None:
            await _listing(transaction, self.keys_of(document), document, listed=False)
        await transaction.delete(CLIENTS, erased.client_id)


async def _listing(
    transaction: DocumentTransaction, keys: list[str], client: Document, *, listed: bool
) -> None:
    """Add ``client`` (a directory entry) to (or take it from) the match-key documents of
    ``keys``; a document naming no one is deleted. Entries are kept in registration order (ties,
    which a store never makes, by id), so any order of events builds the same."""
    entry = [int(client["position"]), client["client_id"]]
    for key in dict.fromkeys(keys):
        document = await transaction.get(MATCH_KEYS, key)
        before = [] if document is None else [list(e) for e in document["clients"]]
        others = [e for e in before if e[1] != entry[1]]
        changed = sorted([*others, entry]) if listed else others
        if changed == before and document is not None:
            continue
        if changed:
            await transaction.put(MATCH_KEYS, key, {"clients": changed})
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

    async def start(self) -> None:
        """Make (or load) the match keys' data key before serving: off the event loop, and an
        unreachable key table or KMS fails the start rather than the first registration."""
        await self._projection.match_keys.ready()

    async def refresh(self) -> int:
        """Apply every registration the directory has not seen yet (read-your-writes)."""
        return await catch_up(self._store, self._read_models, self._projection)

    async def candidates(
        self,
        probe: Probe,
        *,
        excluding: str | None = None,
        registered_before: int | None = None,
    ) -> FoundCandidates:
        """The clients that may be ``probe``'s person, in registration order: of each of its
        match keys, the ``CANDIDATES_PER_KEY`` registered last (before ``registered_before``),
        of those ``CANDIDATES_PER_LOOKUP`` (the keys naming fewest first), ``truncated`` when a
        key or the keys together named more."""
        # Reads by primary key, whatever the number of clients: the match-key documents of the
        # probe's keys, then the clients they list.
        hashes = self._projection.match_keys
        await hashes.ready()
        keys = [hashes.identifier(key) for key in probe.identifier_keys]
        if probe.name_key is not None:
            keys.append(hashes.name(probe.name_key))
        listed = await self._read_models.get_many(MATCH_KEYS, keys) if keys else {}
        named_by_key = [
            [
                (client_id, position)
                for position, client_id in document["clients"]
                if client_id != excluding
                and (registered_before is None or position < registered_before)
            ]
            for document in listed.values()
        ]
        positions: dict[str, int] = {}
        truncated = False
        # The keys naming fewest clients first: an identifier shared by few people says more
        # than a placeholder typed at many registrations, whose crowd must not push an older
        # exact match out of the lookup's bound.
        for named in sorted(
            named_by_key, key=lambda n: (len(n), -max((p for _, p in n), default=0))
        ):
            kept = named[-CANDIDATES_PER_KEY:]
            truncated = truncated or len(named) > len(kept)
            for client_id, position in reversed(kept):  # the most recently registered first
                if client_id in positions:
                    continue
                if len(positions) == CANDIDATES_PER_LOOKUP:
                    truncated = True
                    break
                positions[client_id] = position
        ids = sorted(positions)
        read = (await self._read_models.get_many(CLIENTS, ids)).values() if ids else ()
        found = candidates(
            probe,
            (known_client(document) for document in read),
            excluding=excluding,
            registered_before=registered_before,
        )
        return FoundCandidates(tuple(found), truncated)
