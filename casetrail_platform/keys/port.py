"""The key ports: the agency's key-encryption key and the table of wrapped per-client data keys.

Both are synchronous on purpose: a stored event's sensitive fields are opened when its data is
first decoded (``RecordedEvent.event``, a property), and a keyring caches what it unwraps, so a
port is asked only on a cache miss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from casetrail_platform.errors import StorageUnavailableError

TOMBSTONE_KEK = "erased"
"""The ``kek_id`` of the tombstone written for an owner erased before any key of it existed
(version 1, nothing wrapped): no key can be created for it afterwards."""


class DataKeyError(Exception):
    """Base of the data-key errors."""


class KeyUnavailableError(StorageUnavailableError, DataKeyError):
    """The key service or table cannot be reached now: retry later, never read as erased
    (answered UNAVAILABLE; a bus consumer pauses and retries, as for a database outage)."""


class UnknownDataKeyError(DataKeyError):
    """A ciphertext names a data key that was never created here (data from another agency,
    or a corrupted value): neither readable nor erased."""

    def __init__(self, owner: str, version: int) -> None:
        super().__init__(f"no data key {owner!r} version {version}")
        self.owner = owner
        self.version = version


class KeyEncryptionKey(ABC):
    """The agency's key-encryption key (KEK): wraps and unwraps data keys, never hands itself
    out. Shaped like a KMS's encrypt/decrypt, so a production adapter keeps it in a KMS or HSM
    (``casetrail_platform.keys.kms``); ``context`` is bound to the wrapped key (AES-GCM associated
    data, or the KMS's encryption context) so a wrapped key cannot be moved to another client."""

    @property
    @abstractmethod
    def key_id(self) -> str:
        """Which KEK wrapped a key (stored beside it, so the KEK can be rotated)."""

    @abstractmethod
    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    @abstractmethod
    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...

    def check(self) -> None:
        """Load the KEK now (a service's start): a KEK file others may read, or one missing,
        fails the start rather than the first sealed event. A KMS adapter checks nothing."""
        return None

    def unwrapper(self, kek_id: str) -> KeyEncryptionKey:
        """The KEK that unwraps keys stored with ``kek_id``: this one, unless it is a ring
        that still holds the KEKs of before a rotation (``keys.rotation.KeyEncryptionKeyRing``)."""
        return self


@dataclass(frozen=True, slots=True)
class StoredDataKey:
    """One version of a client's data key as its table holds it (``wrapped`` is ``None`` once
    the key was destroyed: what it encrypted is erased)."""

    owner: str
    version: int
    wrapped: bytes | None
    kek_id: str
    created_at: datetime
    destroyed_at: datetime | None


class DataKeyTable(ABC):
    """The agency's table of wrapped data keys and of which client each case belongs to."""

    @abstractmethod
    def current(self, owner: str) -> StoredDataKey | None:
        """The newest version of ``owner``'s key (destroyed or not), ``None`` if it has none."""

    @abstractmethod
    def version(self, owner: str, version: int) -> StoredDataKey | None: ...

    @abstractmethod
    def create(self, owner: str, version: int, wrapped: bytes, kek_id: str) -> StoredDataKey:
        """Store a new key version; when another writer stored that version first, its key
        (both writers then use the same one)."""

    @abstractmethod
    def destroy(self, owner: str) -> int:
        """Forget every version of ``owner``'s key for good (idempotent); how many versions
        were still live. The old wrapped bytes must not survive in the table's files. An owner
        with no key yet gets a tombstone (``TOMBSTONE_KEK``), so ``create`` can never give it
        one afterwards."""

    @abstractmethod
    def live_keys_by_kek(self) -> dict[str, int]:
        """How many keys (not destroyed) each KEK wraps, by ``kek_id``."""

    @abstractmethod
    def wrapped_by_other_keks(
        self, kek_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[StoredDataKey]:
        """Up to ``limit`` keys, not destroyed, that another KEK than ``kek_id`` wraps, in
        (owner, version) order after ``after``."""

    @abstractmethod
    def rewrap(self, rewrapped: Sequence[tuple[StoredDataKey, bytes]], kek_id: str) -> int:
        """In one transaction, replace each key's wrapped bytes by the new ones, wrapped by
        ``kek_id``, where they are still those read (a key destroyed or re-wrapped since is
        left as it is: erased stays erased); how many were replaced."""

    @abstractmethod
    def bind_case(self, case_id: str, client_id: str) -> str:
        """Note that ``case_id`` is a case of ``client_id`` (idempotent; first binding wins):
        the client the table holds for the case, after this call."""

    @abstractmethod
    def client_of_case(self, case_id: str) -> str | None: ...

    @abstractmethod
    def cases_of(self, client_id: str) -> list[str]: ...

    @abstractmethod
    def close(self) -> None: ...
