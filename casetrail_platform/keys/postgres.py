"""The data-key table of the distributed backend: schema ``casetrail_keys``, one per agency
database, shared by every service.

Synchronous (psycopg's blocking connection) like the port: it is asked on a keyring's cache
miss only. Destroying a key clears its wrapped bytes and vacuums the table, so the old row
version is neither readable nor dumped (``pg_dump`` reads live rows; base backups and WAL
archives keep it until they expire: the KEK in a KMS is what makes those useless).

VACUUM cannot remove a row version that a snapshot taken before the erasure may still see (a
transaction left open in the database, a standby's feedback slot): it leaves it on disk and
says nothing. So ``destroy`` vacuums every time (a retry of an erasure cut off before its
vacuum vacuums too), once no such snapshot is left, asked again for up to
``_VACUUM_WAIT_SECONDS``; past that it raises ``KeyUnavailableError``: the erasure is answered
UNAVAILABLE and its retry finishes it once that transaction ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import psycopg

from casetrail_platform.keys.port import (
    TOMBSTONE_KEK,
    DataKeyTable,
    KeyUnavailableError,
    StoredDataKey,
)
from casetrail_platform.store.pg_connections import CONNECT_TIMEOUT_SECONDS
from casetrail_platform.store.pg_horizons import VACUUM_HORIZONS

KEYS_SCHEMA = "casetrail_keys"

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.data_keys (
    owner text NOT NULL,
    version integer NOT NULL CHECK (version > 0),
    wrapped bytea,
    kek_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    PRIMARY KEY (owner, version)
);
CREATE TABLE IF NOT EXISTS {schema}.case_clients (
    case_id text PRIMARY KEY,
    client_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS case_clients_by_client ON {schema}.case_clients (client_id);
"""

_COLUMNS = "owner, version, wrapped, kek_id, created_at, destroyed_at"

_VACUUM_WAIT_SECONDS = 5.0
"""How long ``destroy`` vacuums again while an older snapshot keeps a destroyed key on disk."""

_OLDER_SNAPSHOTS = f"""
SELECT count(*) FROM data_keys AS k, ({VACUUM_HORIZONS}) AS s
WHERE k.owner = %s AND k.wrapped IS NULL AND k.kek_id <> %s
    AND age(s.horizon) >= age(k.xmin)
"""
"""Snapshots that may still see the row versions ``destroy`` cleared for ``owner`` (each
destroyed row's ``xmin`` is the transaction that cleared it; a tombstone had no key): while
there is one, VACUUM leaves the wrapped bytes on disk. An autovacuum worker's snapshot is not
one (VACUUM ignores another vacuum's); a manual VACUUM's is counted, and passes quickly."""


def data_key_table_exists(dsn: str, schema: str = KEYS_SCHEMA) -> bool:
    """Whether the database at ``dsn`` holds the data-key table, asked without creating it
    (opening a ``PostgresDataKeyTable`` does): an operator's command pointed at the wrong
    database must say so, not leave an empty key schema there. ``KeyUnavailableError`` when the
    database does not answer."""
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            row = connection.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.data_keys",)
            ).fetchone()
    except psycopg.OperationalError as error:
        raise KeyUnavailableError("data-key table") from error
    return bool(row and row[0])


class PostgresDataKeyTable(DataKeyTable):
    def __init__(self, dsn: str, schema: str = KEYS_SCHEMA) -> None:
        self._dsn = dsn
        self._schema = schema
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None

    def current(self, owner: str) -> StoredDataKey | None:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM data_keys WHERE owner = %s ORDER BY version DESC LIMIT 1",
            (owner,),
        )
        return _key(rows[0]) if rows else None

    def version(self, owner: str, version: int) -> StoredDataKey | None:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM data_keys WHERE owner = %s AND version = %s",
            (owner, version),
        )
        return _key(rows[0]) if rows else None

    def create(self, owner: str, version: int, wrapped: bytes, kek_id: str) -> StoredDataKey:
        self._run(
            "INSERT INTO data_keys (owner, version, wrapped, kek_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (owner, version) DO NOTHING",
            (owner, version, wrapped, kek_id),
            fetch=False,
        )
        stored = self.version(owner, version)
        assert stored is not None
        return stored

    def destroy(self, owner: str) -> int:
        # One transaction, the tombstone first. An owner with no key yet gets a tombstone too:
        # a key created for it later (a process that looked before the erasure) would seal its
        # data under a live key. Inserted first, it waits on a key another session is creating
        # at that moment, which the clearing statement after it then sees and clears; and a
        # creation after it waits on the tombstone and finds it. Cleared first, as it was, a
        # key created between the two statements outlived the erasure.
        rows = self._run_together(
            (
                "INSERT INTO data_keys (owner, version, wrapped, kek_id, destroyed_at)"
                " VALUES (%s, 1, NULL, %s, now()) ON CONFLICT (owner, version) DO NOTHING",
                (owner, TOMBSTONE_KEK),
            ),
            (
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = now()"
                " WHERE owner = %s AND wrapped IS NOT NULL RETURNING version",
                (owner,),
            ),
        )
        self._vacuum_away(owner)
        return len(rows)

    def _vacuum_away(self, owner: str) -> None:
        deadline = time.monotonic() + _VACUUM_WAIT_SECONDS
        while True:
            # Checked before the vacuum, not after: a snapshot open during the vacuum and ended
            # before the check let the vacuum leave the key's old row version on disk, and the
            # erasure answered OK. None older now, none is later (a newer one sees no key).
            [(older,)] = self._run(_OLDER_SNAPSHOTS, (owner, TOMBSTONE_KEK))
            if not older:
                self._run("VACUUM data_keys", (), fetch=False)
                return
            if time.monotonic() >= deadline:
                raise KeyUnavailableError(
                    "data-key table (a transaction older than the erasure is still open: the"
                    " destroyed key's old row version stays on disk until it ends)"
                )
            time.sleep(0.2)

    def live_keys_by_kek(self) -> dict[str, int]:
        rows = self._run(
            "SELECT kek_id, count(*) FROM data_keys WHERE wrapped IS NOT NULL GROUP BY kek_id", ()
        )
        return {str(kek_id): int(count) for kek_id, count in rows}

    def wrapped_by_other_keks(
        self, kek_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[StoredDataKey]:
        owner, version = after or ("", 0)
        rows = self._run(
            f"SELECT {_COLUMNS} FROM data_keys WHERE wrapped IS NOT NULL AND kek_id <> %s"
            " AND (owner, version) > (%s, %s) ORDER BY owner, version LIMIT %s",
            (kek_id, owner, version, limit),
        )
        return [_key(row) for row in rows]

    def rewrap(self, rewrapped: Sequence[tuple[StoredDataKey, bytes]], kek_id: str) -> int:
        # One statement (one round trip, one transaction); run again after a dropped session,
        # it replaces nothing that the first run did (those bytes are no longer as read).
        rows = self._run(
            "UPDATE data_keys SET wrapped = batch.wrapped, kek_id = %s"
            " FROM unnest(%s::text[], %s::integer[], %s::bytea[], %s::bytea[])"
            " AS batch (owner, version, was, wrapped)"
            " WHERE data_keys.owner = batch.owner AND data_keys.version = batch.version"
            " AND data_keys.wrapped = batch.was RETURNING data_keys.version",
            (
                kek_id,
                [old.owner for old, _ in rewrapped],
                [old.version for old, _ in rewrapped],
                [old.wrapped for old, _ in rewrapped],
                [wrapped for _, wrapped in rewrapped],
            ),
        )
        return len(rows)

    def bind_case(self, case_id: str, client_id: str) -> str:
        self._run(
            "INSERT INTO case_clients (case_id, client_id) VALUES (%s, %s)"
            " ON CONFLICT (case_id) DO NOTHING",
            (case_id, client_id),
            fetch=False,
        )
        # A statement of its own (autocommit): one snapshot taken after the insert, which
        # sees the row another session committed while the insert waited on it.
        return str(self.client_of_case(case_id))

    def client_of_case(self, case_id: str) -> str | None:
        rows = self._run("SELECT client_id FROM case_clients WHERE case_id = %s", (case_id,))
        return str(rows[0][0]) if rows else None

    def cases_of(self, client_id: str) -> list[str]:
        rows = self._run(
            "SELECT case_id FROM case_clients WHERE client_id = %s ORDER BY case_id",
            (client_id,),
        )
        return [str(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _run(
        self, query: str, parameters: tuple[object, ...], *, fetch: bool = True
    ) -> list[tuple[Any, ...]]:
        return self._run_together((query, parameters), fetch=fetch)

    def _run_together(
        self, *statements: tuple[str, tuple[object, ...]], fetch: bool = True
    ) -> list[tuple[Any, ...]]:
        """``statements`` in one transaction (one alone: autocommit); what the last one
        returns. A dropped session (server restart) gets one more try on a fresh one: the
        transaction it cut off was rolled back whole."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    connection = self._open()
                    with connection.transaction() if len(statements) > 1 else nullcontext():
                        for query, parameters in statements:
                            cursor = connection.execute(query, parameters)
                    return cursor.fetchall() if fetch else []
                except psycopg.OperationalError as error:
                    self._drop()
                    if attempt == 2:
                        raise KeyUnavailableError("data-key table") from error
        raise AssertionError("unreachable")

    def _open(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed or self._connection.broken:
            connection: psycopg.Connection[Any] = psycopg.connect(
                self._dsn,
                autocommit=True,
                options=f"-c TimeZone=UTC -c search_path={self._schema}",
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )
            try:
                connection.execute("SELECT pg_advisory_lock(hashtext('casetrail.keys.schema'))")
                connection.execute(_SCHEMA.format(schema=self._schema))
            finally:
                connection.execute("SELECT pg_advisory_unlock(hashtext('casetrail.keys.schema'))")
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _key(row: tuple[Any, ...]) -> StoredDataKey:
    owner, version, wrapped, kek_id, created_at, destroyed_at = row
    return StoredDataKey(
        owner,
        version,
        None if wrapped is None else bytes(wrapped),
        kek_id,
        created_at,
        destroyed_at,
    )
