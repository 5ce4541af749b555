"""KEK rotation on both data-key tables: every live key re-wrapped by the new KEK and read
back, a rotation stopped midway completes when run again, erased keys stay erased."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casetrail_platform.keys.file_kek import FileKeyEncryptionKey
from casetrail_platform.keys.hosting import file_kek
from casetrail_platform.keys.keyring import ClientKeyring, wrap_context
from casetrail_platform.keys.port import (
    DataKeyTable,
    KeyEncryptionKey,
    KeyUnavailableError,
    StoredDataKey,
)
from casetrail_platform.keys.postgres import PostgresDataKeyTable
from casetrail_platform.keys.rotation import RotationProgress, rotate_kek
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from tests.support.servers import postgres_dsn, server_missing

OWNERS = [f"client-{number:02d}" for number in range(23)]
ERASED = "client-07"


@pytest.fixture(params=["sqlite", "postgres"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataKeyTable]:
    if request.param == "sqlite":
        sqlite = SqliteDataKeyTable(tmp_path / "keys.db")
        yield sqlite
        sqlite.close()
        return
    schema = f"keys_{uuid.uuid4().hex[:12]}"
    try:
        postgres = PostgresDataKeyTable(postgres_dsn(), schema=schema)
        postgres.live_keys_by_kek()
    except KeyUnavailableError as error:
        server_missing("PostgreSQL", error)
    yield postgres
    postgres.close()
    with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class StopAfter(KeyEncryptionKey):
    """The new KEK, failing after ``wraps`` wraps: a rotation interrupted in a batch."""

    def __init__(self, kek: KeyEncryptionKey, wraps: int) -> None:
        self._kek = kek
        self._left = wraps

    @property
    def key_id(self) -> str:
        return self._kek.key_id

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        if self._left == 0:
            raise KeyUnavailableError("KMS (stopped for the test)")
        self._left -= 1
        return self._kek.wrap(data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._kek.unwrap(wrapped, context)

    def unwrapper(self, kek_id: str) -> KeyEncryptionKey:
        return self._kek.unwrapper(kek_id)


def _keys_under_old_kek(table: DataKeyTable, tmp_path: Path) -> dict[tuple[str, int], bytes]:
    """Two versions of every owner's key under the old KEK, one client erased; what each
    live key encrypts, to compare after the rotation."""
    old = FileKeyEncryptionKey(tmp_path / "old.bin")
    keyring = ClientKeyring(old, table)
    for owner in OWNERS:
        keyring.encryption_key(owner)
        # A second version, as a re-keying would make.
        data_key = AESGCM.generate_key(bit_length=256)
        table.create(owner, 2, keyring.kek.wrap(data_key, wrap_context(owner, 2)), old.key_id)
    keyring.destroy(ERASED)
    fresh = ClientKeyring(keyring.kek, table, cache_seconds=0)
    return {
        (owner, version): _probe(fresh, owner, version)
        for owner in OWNERS
        if owner != ERASED
        for version in (1, 2)
    }


def _probe(keyring: ClientKeyring, owner: str, version: int) -> bytes:
    key = keyring.decryption_key(owner, version)
    assert key is not None
    return key.encrypt(b"\x00" * 12, b"probe", None)


def _assert_every_key_reads_back(
    table: DataKeyTable, kek: KeyEncryptionKey, probes: dict[tuple[str, int], bytes]
) -> None:
    keyring = ClientKeyring(kek, table, cache_seconds=0)
    for (owner, version), probe in probes.items():
        assert _probe(keyring, owner, version) == probe
    for version in (1, 2):
        stored = table.version(ERASED, version)
        assert stored is not None
        assert stored.wrapped is None
        assert keyring.decryption_key(ERASED, version) is None


def test_rotation_rewraps_every_live_key_and_leaves_erased_ones_destroyed(
    table: DataKeyTable, tmp_path: Path
) -> None:
    probes = _keys_under_old_kek(table, tmp_path)
    old_id = FileKeyEncryptionKey(tmp_path / "old.bin").key_id
    ring = file_kek(tmp_path / "new.bin", [tmp_path / "old.bin"])
    batches: list[RotationProgress] = []

    result = rotate_kek(table, ring, batch_size=10, on_batch=batches.append)

    assert result.done
    assert result.rewrapped == len(probes) == 44
    assert result.changed == 0
    assert [progress.rewrapped for progress in batches] == [10, 20, 30, 40, 44]
    assert table.live_keys_by_kek() == {ring.key_id: 44}
    assert ring.key_id != old_id
    _assert_every_key_reads_back(table, ring, probes)
    # Once done, the new KEK alone reads every key: the old one can be retired.
    (tmp_path / "old.bin").unlink()
    _assert_every_key_reads_back(table, file_kek(tmp_path / "new.bin"), probes)
    again = rotate_kek(table, file_kek(tmp_path / "new.bin"), batch_size=10)
    assert again.done
    assert again.rewrapped == 0


def test_a_rotation_stopped_midway_reads_with_both_keks_and_completes_when_run_again(
    table: DataKeyTable, tmp_path: Path
) -> None:
    probes = _keys_under_old_kek(table, tmp_path)
    ring = file_kek(tmp_path / "new.bin", [tmp_path / "old.bin"])

    # Stopped in the third batch: the first two are committed, the third is not.
    with pytest.raises(KeyUnavailableError):
        rotate_kek(table, StopAfter(ring, wraps=25), batch_size=10)

    usage = table.live_keys_by_kek()
    assert usage[ring.key_id] == 20
    assert sum(usage.values()) == 44
    _assert_every_key_reads_back(table, ring, probes)
    result = rotate_kek(table, ring, batch_size=10)
    assert result.done
    assert result.rewrapped == 24
    _assert_every_key_reads_back(table, ring, probes)


def test_a_key_destroyed_during_a_rotation_stays_destroyed(
    table: DataKeyTable, tmp_path: Path
) -> None:
    probes = _keys_under_old_kek(table, tmp_path)
    ring = file_kek(tmp_path / "new.bin", [tmp_path / "old.bin"])
    # A batch read, then client-00 erased before the batch is written.
    batch = table.wrapped_by_other_keks(ring.key_id, None, 4)
    assert [(key.owner, key.version) for key in batch][:2] == [
        ("client-00", 1),
        ("client-00", 2),
    ]
    rewrapped = [(key, _rewrapped(ring, key)) for key in batch]
    ClientKeyring(ring, table).destroy("client-00")  # between the read and the write

    assert table.rewrap(rewrapped, ring.key_id) == 2  # client-01's only
    for version in (1, 2):
        stored = table.version("client-00", version)
        assert stored is not None
        assert stored.wrapped is None
    result = rotate_kek(table, ring)
    assert result.done
    assert result.rewrapped == 40
    probes = {name: probe for name, probe in probes.items() if name[0] != "client-00"}
    _assert_every_key_reads_back(table, ring, probes)


def _rewrapped(ring: KeyEncryptionKey, key: StoredDataKey) -> bytes:
    assert key.wrapped is not None
    context = wrap_context(key.owner, key.version)
    return ring.wrap(ring.unwrapper(key.kek_id).unwrap(key.wrapped, context), context)


def test_a_key_wrapped_by_an_unconfigured_kek_stops_the_rotation_naming_that_kek(
    table: DataKeyTable, tmp_path: Path
) -> None:
    _keys_under_old_kek(table, tmp_path)
    old_id = FileKeyEncryptionKey(tmp_path / "old.bin").key_id

    with pytest.raises(KeyUnavailableError, match=old_id):
        rotate_kek(table, file_kek(tmp_path / "new.bin"))

    assert table.live_keys_by_kek() == {old_id: 44}
