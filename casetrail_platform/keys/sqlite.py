"""The data-key table of the embedded default: ``<data dir>/keys/keys.db``, shared by the
agency's services (every service decrypts every other's events).

Destroying a key deletes its row with ``secure_delete`` on (SQLite zeroes the freed space) and
leaves a tombstone, then truncates the write-ahead log, so the wrapped key survives in neither
file. The log cannot be truncated while another connection reads from it (the busy timeout is
waited first): ``destroy`` then raises ``KeyUnavailableError`` rather than report the key gone
while its earlier page versions are in the log, and a retry (which truncates again, every
time) finishes the erasure.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casetrail_platform.keys.port import (
    TOMBSTONE_KEK,
    DataKeyTable,
    KeyUnavailableError,
    StoredDataKey,
)
from casetrail_platform.private_files import private_directory
from casetrail_platform.store.sqlite_writer import connect

KEYS_FILE_NAME = "keys.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    owner TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    wrapped BLOB,
    kek_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    destroyed_at TEXT,
    PRIMARY KEY (owner, version)
);
CREATE TABLE IF NOT EXISTS case_clients (
    case_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_clients_by_client ON case_clients (client_id);
"""

_COLUMNS = "owner, version, wrapped, kek_id, created_at, destroyed_at"


class SqliteDataKeyTable(DataKeyTable):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._opened: sqlite3.Connection | None = None

    @property
    def _connection(self) -> sqlite3.Connection:
        """Opened on first use (nothing is opened when the table object is made)."""
        with self._lock:
            if self._opened is None:
                # The clients' wrapped data keys: owner-only, from the file's first moment.
                private_directory(self._path.parent)
                connection = connect(str(self._path), busy_timeout_s=30)
                connection.execute("PRAGMA secure_delete=ON")
                connection.executescript(_SCHEMA)
                self._opened = connection
            return self._opened

    def current(self, owner: str) -> StoredDataKey | None:
        return self._one(
            f"SELECT {_COLUMNS} FROM data_keys WHERE owner = ? ORDER BY version DESC LIMIT 1",
            (owner,),
        )

    def version(self, owner: str, version: int) -> StoredDataKey | None:
        return self._one(
            f"SELECT {_COLUMNS} FROM data_keys WHERE owner = ? AND version = ?", (owner, version)
        )

    def create(self, owner: str, version: int, wrapped: bytes, kek_id: str) -> StoredDataKey:
        with self._lock:
            self._connection.execute(
                "INSERT OR IGNORE INTO data_keys (owner, version, wrapped, kek_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (owner, version, wrapped, kek_id, _now()),
            )
        stored = self.version(owner, version)
        assert stored is not None
        return stored

    def destroy(self, owner: str) -> int:
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                live = connection.execute(
                    "SELECT version, kek_id, created_at FROM data_keys"
                    " WHERE owner = ? AND wrapped IS NOT NULL",
                    (owner,),
                ).fetchall()
                connection.execute(
                    "DELETE FROM data_keys WHERE owner = ? AND wrapped IS NOT NULL", (owner,)
                )
                connection.executemany(
                    "INSERT INTO data_keys (owner, version, wrapped, kek_id, created_at,"
                    " destroyed_at) VALUES (?, ?, NULL, ?, ?, ?)",
                    [(owner, version, kek, created, _now()) for version, kek, created in live],
                )
                # An owner with no key yet gets a tombstone too: a key created for it later
                # (a process that looked before the erasure) would seal under a live key.
                connection.execute(
                    "INSERT OR IGNORE INTO data_keys (owner, version, wrapped, kek_id,"
                    " created_at, destroyed_at) VALUES (?, 1, NULL, ?, ?, ?)",
                    (owner, TOMBSTONE_KEK, _now(), _now()),
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise KeyUnavailableError(
                "data-key table (its write-ahead log, which still holds the destroyed key,"
                " could not be truncated while another connection read it)"
            )
        return len(live)

    def live_keys_by_kek(self) -> dict[str, int]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT kek_id, count(*) FROM data_keys WHERE wrapped IS NOT NULL GROUP BY kek_id"
            ).fetchall()
        return {str(kek_id): int(count) for kek_id, count in rows}

    def wrapped_by_other_keks(
        self, kek_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[StoredDataKey]:
        owner, version = after or ("", 0)
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {_COLUMNS} FROM data_keys WHERE wrapped IS NOT NULL AND kek_id <> ?"
                " AND (owner, version) > (?, ?) ORDER BY owner, version LIMIT ?",
                (kek_id, owner, version, limit),
            ).fetchall()
        return [_key(row) for row in rows]

    def rewrap(self, rewrapped: Sequence[tuple[StoredDataKey, bytes]], kek_id: str) -> int:
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                replaced = 0
                for old, wrapped in rewrapped:
                    replaced += connection.execute(
                        "UPDATE data_keys SET wrapped = ?, kek_id = ?"
                        " WHERE owner = ? AND version = ? AND wrapped = ?",
                        (wrapped, kek_id, old.owner, old.version, old.wrapped),
                    ).rowcount
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return replaced

    def bind_case(self, case_id: str, client_id: str) -> str:
        with self._lock:
            self._connection.execute(
                "INSERT OR IGNORE INTO case_clients (case_id, client_id) VALUES (?, ?)",
                (case_id, client_id),
            )
            (holder,) = self._connection.execute(
                "SELECT client_id FROM case_clients WHERE case_id = ?", (case_id,)
            ).fetchone()
        return str(holder)

    def client_of_case(self, case_id: str) -> str | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT client_id FROM case_clients WHERE case_id = ?", (case_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def cases_of(self, client_id: str) -> list[str]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT case_id FROM case_clients WHERE client_id = ? ORDER BY case_id",
                (client_id,),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._opened is not None:
                self._opened.close()
                self._opened = None

    def _one(self, query: str, parameters: tuple[object, ...]) -> StoredDataKey | None:
        with self._lock:
            row = self._connection.execute(query, parameters).fetchone()
        return None if row is None else _key(row)


def _key(row: tuple[Any, ...]) -> StoredDataKey:
    owner, version, wrapped, kek_id, created_at, destroyed_at = row
    return StoredDataKey(
        owner,
        version,
        None if wrapped is None else bytes(wrapped),
        kek_id,
        datetime.fromisoformat(created_at),
        None if destroyed_at is None else datetime.fromisoformat(destroyed_at),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()
