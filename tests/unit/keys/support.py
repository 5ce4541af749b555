"""A keyring on fakes: a KEK that subclasses the port and an in-memory data-key table (and one
that notes the threads it is used from); the example events that have sensitive fields."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casetrail_platform.keys.fields import (
    FieldProtection,
    sensitive_plan,
)
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import (
    TOMBSTONE_KEK,
    DataKeyTable,
    KeyEncryptionKey,
    KeyUnavailableError,
    StoredDataKey,
)
from events.catalog.examples import example_events
from events.catalog_registry import build_registry
from events.registry import EventRegistry


class FakeKms(KeyEncryptionKey):
    """A KMS that keeps its key in memory and counts its calls."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self.unwraps = 0

    @property
    def key_id(self) -> str:
        return "fake-kms/agency"

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        return b"\x00" * 12 + self._aead.encrypt(b"\x00" * 12, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        self.unwraps += 1
        return self._aead.decrypt(wrapped[:12], wrapped[12:], context)


class MemoryDataKeyTable(DataKeyTable):
    def __init__(self) -> None:
        self.keys: dict[tuple[str, int], StoredDataKey] = {}
        self.cases: dict[str, str] = {}

    def current(self, owner: str) -> StoredDataKey | None:
        versions = [key for (name, _), key in self.keys.items() if name == owner]
        return max(versions, key=lambda key: key.version) if versions else None

    def version(self, owner: str, version: int) -> StoredDataKey | None:
        return self.keys.get((owner, version))

    def create(self, owner: str, version: int, wrapped: bytes, kek_id: str) -> StoredDataKey:
        return self.keys.setdefault(
            (owner, version),
            StoredDataKey(owner, version, wrapped, kek_id, datetime.now(UTC), None),
        )

    def destroy(self, owner: str) -> int:
        live = [k for k in self.keys.values() if k.owner == owner and k.wrapped is not None]
        for key in live:
            self.keys[(owner, key.version)] = StoredDataKey(
                owner, key.version, None, key.kek_id, key.created_at, datetime.now(UTC)
            )
        now = datetime.now(UTC)
        self.keys.setdefault((owner, 1), StoredDataKey(owner, 1, None, TOMBSTONE_KEK, now, now))
        return len(live)

    def live_keys_by_kek(self) -> dict[str, int]:
        return dict(Counter(k.kek_id for k in self.keys.values() if k.wrapped is not None))

    def wrapped_by_other_keks(
        self, kek_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[StoredDataKey]:
        return [
            self.keys[name]
            for name in sorted(self.keys)
            if (after is None or name > after)
            and self.keys[name].wrapped is not None
            and self.keys[name].kek_id != kek_id
        ][:limit]

    def rewrap(self, rewrapped: Sequence[tuple[StoredDataKey, bytes]], kek_id: str) -> int:
        current = [
            (old, new) for old, new in rewrapped if self.keys[(old.owner, old.version)] == old
        ]
        for old, new in current:
            self.keys[(old.owner, old.version)] = replace(old, wrapped=new, kek_id=kek_id)
        return len(current)

    def bind_case(self, case_id: str, client_id: str) -> str:
        return self.cases.setdefault(case_id, client_id)

    def client_of_case(self, case_id: str) -> str | None:
        return self.cases.get(case_id)

    def cases_of(self, client_id: str) -> list[str]:
        return sorted(case for case, client in self.cases.items() if client == client_id)

    def close(self) -> None:
        pass


def protected(
    kek: KeyEncryptionKey | None = None, table: DataKeyTable | None = None
) -> EventRegistry:
    keyring = ClientKeyring(kek or FakeKms(), table or MemoryDataKeyTable())
    return build_registry().protected(FieldProtection(keyring))


def keyring_of(registry: EventRegistry) -> ClientKeyring:
    assert registry.protection is not None
    return registry.protection.keyring


SENSITIVE_EXAMPLES = [event for event in example_events() if sensitive_plan(type(event))]


class ThreadNotingTable(MemoryDataKeyTable):
    """Notes the thread of every look-up and write."""

    def __init__(self, away_for: int = 0) -> None:
        super().__init__()
        self.threads: list[int] = []
        self.away_for = away_for
        """How many look-ups of a key version fail as if the database were away."""

    def current(self, owner: str) -> StoredDataKey | None:
        self.threads.append(threading.get_ident())
        return super().current(owner)

    def version(self, owner: str, version: int) -> StoredDataKey | None:
        self.threads.append(threading.get_ident())
        if self.away_for:
            self.away_for -= 1
            raise KeyUnavailableError("data-key table")
        return super().version(owner, version)

    def bind_case(self, case_id: str, client_id: str) -> str:
        self.threads.append(threading.get_ident())
        return super().bind_case(case_id, client_id)

    def client_of_case(self, case_id: str) -> str | None:
        self.threads.append(threading.get_ident())
        return super().client_of_case(case_id)
