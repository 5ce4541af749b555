"""Read models in PostgreSQL (psycopg 3, async). Documents are jsonb; tracking sits beside them
in the same schema so each projection transaction moves documents and tracking together."""

from __future__ import annotations

import asyncio
import json
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID, uuid4

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.projections.pg_changes import ChangeListener, change_payload, channel_of
from casetrail_platform.projections.port import (
    FORGET_PATIENCE_SECONDS,
    ChangeCallback,
    Document,
    DocumentReader,
    DocumentTransaction,
    KeyRange,
    ReadModelStore,
    no_list,
    ordering,
)
from casetrail_platform.store.pg_connections import Connection, PgConnections, creating_schema
from casetrail_platform.store.pg_horizons import VACUUM_HORIZONS

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection text NOT NULL,
    key text NOT NULL,
    document jsonb NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE IF NOT EXISTS projection_positions (
    projection text PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_applied (
    projection text NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (projection, event_id)
);
CREATE TABLE IF NOT EXISTS forget_pending (
    mark uuid PRIMARY KEY
);
"""


TRANSACTION_IDLE_LIMIT = 30.0
"""Seconds a read-model transaction may wait between statements before the server ends its
session (rolling it back whole): a projection's batch never waits that long, so only a process
that stopped answering (frozen, its host cut off) does, and its locks (the projection's
position row) would otherwise stop whichever replica takes over until TCP keepalive gave up."""

_OLDER_SNAPSHOTS = f"""
SELECT count(*) FROM ({VACUUM_HORIZONS}) AS snapshots WHERE age(horizon) > age(%s::text::xid)
"""
"""``VACUUM_HORIZONS`` older than a transaction id, asked with the first id unassigned when
``forget_overwritten`` began, after the erasure's commit: one older than that may still see
what the erasure overwrote (or is held back by one that may: VACUUM's horizon is the oldest of
them). The data-key table asks the same (keys/postgres.py), of its destroyed rows."""

_NEXT_TRANSACTION_ID = (
    "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::bigint % 4294967296)::text"
)
"""The first transaction id not yet assigned, as the 32-bit ``xid`` the snapshots' horizons
are (``xid8`` carries an epoch above them)."""

SNAPSHOT_CONNECTIONS = 4
"""Snapshots (``PostgresReadModelStore.snapshot``) open at once, each on a connection of its
own: the store's one reader would hold every other read to the snapshot while it lasts. One
more waits for one of them to end (a pass over a case's index takes moments)."""

T = TypeVar("T")

_PROJECTION_LOCK = 0x63747278
"""First key of the transaction-level advisory lock that serialises one projection's bus
batches across the service's replicas (second key: hash of the projection's name)."""


class _PostgresReads(DocumentReader):
    """Reads of committed documents, each run by ``_read``: on the store's reader (each
    statement sees the last commit) or in a snapshot's transaction."""

    @abstractmethod
    async def _read(self, work: Callable[[Connection], Awaitable[T]]) -> T: ...

    async def get(self, collection: str, key: str) -> Document | None:
        return await self._read(lambda connection: _get(connection, collection, key))

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        async def fetch(connection: Connection) -> list[tuple[str, Any]]:
            cursor = await connection.execute(
                "SELECT key, document FROM documents WHERE collection = %s AND key = ANY(%s)",
                (collection, list(keys)),
            )
            return await cursor.fetchall()

        return {key: dict(document) for key, document in await self._read(fetch)}

    async def applied_position(self, projection: str) -> int:
        async def read(connection: Connection) -> int:
            cursor = await connection.execute(
                "SELECT position FROM projection_positions WHERE projection = %s", (projection,)
            )
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        return await self._read(read)

    async def find(
        self,
        collection: str,
        equals: Mapping[str, str | int | bool] | None = None,
        contains: Mapping[str, str] | None = None,
        limit: int = 1000,
    ) -> list[Document]:
        return await self._read(
            lambda connection: _find(connection, collection, equals or {}, contains or {}, limit)
        )

    async def scan(self, collection: str) -> AsyncIterator[tuple[str, Document]]:
        async def fetch(connection: Connection) -> list[tuple[str, Any]]:
            cursor = await connection.execute(
                "SELECT key, document FROM documents WHERE collection = %s"
                ' ORDER BY key COLLATE "C"',
                (collection,),
            )
            return await cursor.fetchall()

        for key, document in await self._read(fetch):
            yield key, dict(document)

    async def key_range(self, collection: str, keys: KeyRange) -> list[tuple[str, Document]]:
        clauses, parameters = _range_clauses(collection, keys)
        order = "DESC" if keys.descending else "ASC"
        query = (
            f"SELECT key, document FROM documents WHERE {clauses}"
            f' ORDER BY key COLLATE "C" {order} LIMIT %s'
        )

        async def fetch(connection: Connection) -> list[tuple[str, Any]]:
            cursor = await connection.execute(query, [*parameters, keys.limit])
            return await cursor.fetchall()

        return [(key, dict(document)) for key, document in await self._read(fetch)]

    async def count_range(self, collection: str, keys: KeyRange) -> int:
        clauses, parameters = _range_clauses(collection, keys)

        async def count(connection: Connection) -> int:
            cursor = await connection.execute(
                f"SELECT count(*) FROM documents WHERE {clauses}", parameters
            )
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        return await self._read(count)


class _SnapshotReads(_PostgresReads):
    """Reads in one read-only REPEATABLE READ transaction: every statement sees the snapshot
    its first one took."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def _read(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        return await work(self._connection)


class PostgresReadModelStore(_PostgresReads, ReadModelStore):
    """Writes go through one connection (one projection transaction at a time), reads through
    another, snapshots through connections of their own; all are reopened after a server
    restart (``PgConnections``), and a database that is away makes every call raise
    ``StorageUnavailableError``."""

    def __init__(
        self,
        writer: PgConnections,
        reader: PgConnections,
        snapshots: PgConnections,
        changes: ChangeListener | None = None,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._snapshots = snapshots
        self._changes = changes

    @classmethod
    async def connect(cls, dsn: str, *, schema: str = "public") -> PostgresReadModelStore:
        what = f"{schema} read models"
        # A transaction left open by a process that stopped answering is ended by the server:
        # a writer's holds locks, a snapshot's holds back the vacuum an erasure waits for.
        idle_limit = f"-c idle_in_transaction_session_timeout={int(TRANSACTION_IDLE_LIMIT * 1000)}"
        writer = PgConnections(dsn, 1, what, search_path=schema, settings=idle_limit)
        reader = PgConnections(dsn, 1, what, search_path=schema)
        snapshots = PgConnections(
            dsn, SNAPSHOT_CONNECTIONS, what, search_path=schema, settings=idle_limit
        )

        async def create(connection: Connection) -> None:
            # Under the schema's creation lock, as the service's other stores: replicas and
            # migrations starting together failed on the catalog's unique index otherwise.
            async with creating_schema(connection, schema):
                await connection.execute(SCHEMA)

        try:
            await writer.run(create)
        except BaseException:
            await writer.close()
            raise
        store = cls(writer, reader, snapshots, ChangeListener(dsn, channel_of(schema), what))
        try:
            # A snapshot older than the erasure still open: logged, the mark stays for the
            # next catch-up (or erasure), and the store serves meanwhile.
            await store.forget_if_pending()
        except BaseException:
            await store.close()
            raise
        return store

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[DocumentTransaction]:
        async with self._writer.connection() as connection, connection.transaction():
            yield _PostgresTransaction(connection, self._changes)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[DocumentReader]:
        async with self._snapshots.transaction(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        ) as connection:
            yield _SnapshotReads(connection)

    async def _read(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        return await self._reader.run(work)

    def watch(self, collection: str, changed: ChangeCallback) -> bool:
        """Every replica of a service watches the same collections from its bootstrap on,
        before it applies anything: so every writer of a watched collection notifies."""
        if self._changes is None:
            return False
        self._changes.watch(collection, changed)
        return True

    def watching(self) -> bool:
        return self._changes is not None and self._changes.live

    async def reset(
        self, projection: str, collections: tuple[str, ...], *, forget: bool = False
    ) -> bool:
        async with self._writer.connection() as connection, connection.transaction():
            deleted = 0
            for statement, parameter in (
                ("DELETE FROM documents WHERE collection = ANY(%s)", list(collections)),
                ("DELETE FROM projection_positions WHERE projection = %s", projection),
                ("DELETE FROM projection_applied WHERE projection = %s", projection),
            ):
                cursor = await connection.execute(statement, (parameter,))
                deleted += max(cursor.rowcount, 0)
            transaction = _PostgresTransaction(connection, self._changes)
            if forget and deleted:
                await transaction.mark_overwritten()
            await transaction.told(collections, None)
        return deleted > 0

    async def forgetting_pending(self) -> bool:
        async def pending(connection: Connection) -> bool:
            cursor = await connection.execute("SELECT EXISTS (SELECT FROM forget_pending)")
            row = await cursor.fetchone()
            return row is not None and bool(row[0])

        return await self._reader.run(pending)

    async def forget_overwritten(self, patience: float | None = None) -> None:
        """The row versions an erasure replaced stay in the table's files (and its TOAST) as
        dead tuples until a vacuum, which autovacuum runs only once enough rows died: an
        unbounded while, with the scrubbed values in them. VACUUM says nothing when a
        snapshot older than the erasure keeps them (``_OLDER_SNAPSHOTS``), so it runs once none
        is left, asked again for ``patience`` seconds (``FORGET_PATIENCE_SECONDS`` unless
        told); then ``StorageUnavailableError``
        (the caller's batch, the erasure with it, is tried again; the erasure's mark stays
        for ``forget_if_pending``). Once done, the marks committed before it began go: one
        committed since may be of an erasure this vacuum came too early for. The writer's
        connection is autocommit outside ``transaction``, as VACUUM needs."""
        async with self._writer.connection() as connection:
            cursor = await connection.execute("SELECT mark FROM forget_pending")
            marks = [row[0] for row in await cursor.fetchall()]
            cursor = await connection.execute(_NEXT_TRANSACTION_ID)
            row = await cursor.fetchone()
            assert row is not None
            erased_before = str(row[0])
            deadline = time.monotonic() + (
                FORGET_PATIENCE_SECONDS if patience is None else patience
            )
            while True:
                # Checked before the vacuum, not after: a snapshot open during the vacuum and
                # ended before the check let the vacuum leave the rows and the marks go.
                # None older now, none is later: a snapshot taken since sees the erasure.
                cursor = await connection.execute(_OLDER_SNAPSHOTS, (erased_before,))
                older = await cursor.fetchone()
                if older is None or not older[0]:
                    await connection.execute("VACUUM documents")
                    if marks:
                        await connection.execute(
                            "DELETE FROM forget_pending WHERE mark = ANY(%s)", (marks,)
                        )
                    return
                if time.monotonic() >= deadline:
                    raise StorageUnavailableError(
                        "read models (a transaction older than an erasure is still open: the"
                        " values it overwrote stay on disk until it ends)"
                    )
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._changes is not None:
            await self._changes.close()
        await self._writer.close()
        await self._reader.close()
        await self._snapshots.close()


_PUT = (
    "INSERT INTO documents (collection, key, document) VALUES (%s, %s, %s::jsonb)"
    " ON CONFLICT (collection, key) DO UPDATE SET document = excluded.document"
)


_PUT_ONCE = """
WITH marked AS (
    INSERT INTO documents (collection, key, document) VALUES (%s, %s, %s::jsonb)
    ON CONFLICT (collection, key) DO NOTHING
    RETURNING 1
), stored AS (
    INSERT INTO documents (collection, key, document)
    SELECT c, k, d::jsonb FROM unnest(%s::text[], %s::text[], %s::text[]) AS given(c, k, d)
    WHERE EXISTS (SELECT FROM marked)
    ON CONFLICT (collection, key) DO UPDATE SET document = excluded.document
), created AS (
    INSERT INTO documents (collection, key, document)
    SELECT c, k, d::jsonb FROM unnest(%s::text[], %s::text[], %s::text[]) AS given(c, k, d)
    WHERE EXISTS (SELECT FROM marked)
    ON CONFLICT (collection, key) DO NOTHING
    RETURNING collection, key
)
SELECT EXISTS (SELECT FROM marked),
    ARRAY(SELECT collection FROM created), ARRAY(SELECT key FROM created)
"""
"""``put_once`` in one statement: its parts see one snapshot, so each writes rows of keys
the others do not touch (``put_once`` asks for keys that differ)."""


def _columns(documents: Sequence[tuple[str, str, Document]]) -> list[list[str]]:
    """Collections, keys and documents (JSON text) as three arrays, for ``unnest``."""
    return [
        [collection for collection, _, _ in documents],
        [key for _, key, _ in documents],
        [json.dumps(document, default=str) for _, _, document in documents],
    ]


class _PostgresTransaction(DocumentTransaction):
    def __init__(self, connection: Connection, changes: ChangeListener | None = None) -> None:
        self._connection = connection
        self._changes = changes

    async def told(self, collections: Iterable[str], key: str | None) -> None:
        """Notify the watchers of ``collections`` (delivered when this transaction commits)."""
        if self._changes is None:
            return
        for collection in set(collections) & set(self._changes.collections):
            await self._connection.execute(
                "SELECT pg_notify(%s, %s)",
                (self._changes.channel, change_payload(collection, key)),
            )

    async def get(self, collection: str, key: str) -> Document | None:
        return await _get(self._connection, collection, key)

    async def put(self, collection: str, key: str, document: Document) -> None:
        await self._connection.execute(_PUT, (collection, key, json.dumps(document, default=str)))
        await self.told([collection], key)

    async def put_many(self, documents: Sequence[tuple[str, str, Document]]) -> None:
        async with self._connection.cursor() as cursor:
            await cursor.executemany(
                _PUT,
                [(c, k, json.dumps(document, default=str)) for c, k, document in documents],
            )
        for collection, key, _ in documents:
            await self.told([collection], key)

    async def put_new(self, collection: str, key: str, document: Document) -> bool:
        cursor = await self._connection.execute(
            "INSERT INTO documents (collection, key, document) VALUES (%s, %s, %s::jsonb)"
            " ON CONFLICT (collection, key) DO NOTHING",
            (collection, key, json.dumps(document, default=str)),
        )
        if cursor.rowcount != 1:
            return False
        await self.told([collection], key)
        return True

    async def put_once(
        self,
        marker: tuple[str, str, Document],
        documents: Sequence[tuple[str, str, Document]],
        new_only: Sequence[tuple[str, str, Document]] = (),
    ) -> bool:
        cursor = await self._connection.execute(
            _PUT_ONCE,
            (
                *marker[:2],
                json.dumps(marker[2], default=str),
                *_columns(documents),
                *_columns(new_only),
            ),
        )
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return False
        await self.told([marker[0]], marker[1])
        for collection, key, _ in documents:
            await self.told([collection], key)
        for collection, key in zip(row[1], row[2], strict=True):
            await self.told([collection], key)
        return True

    async def put_if_unchanged(
        self, collection: str, key: str, expected: Document | None, document: Document
    ) -> bool:
        if expected is None:
            return await self.put_new(collection, key, document)
        cursor = await self._connection.execute(
            "UPDATE documents SET document = %s::jsonb"
            " WHERE collection = %s AND key = %s AND document = %s::jsonb",
            (
                json.dumps(document, default=str),
                collection,
                key,
                json.dumps(expected, default=str),
            ),
        )
        if cursor.rowcount != 1:
            return False
        await self.told([collection], key)
        return True

    async def put_if_later(
        self, collection: str, key: str, document: Document, order_field: str
    ) -> bool:
        # ON CONFLICT takes the row's lock and compares with its committed version (waiting
        # for a writer that holds it), so a racing writer of a later document always wins.
        order = ordering(document, order_field)
        cursor = await self._connection.execute(
            "INSERT INTO documents (collection, key, document) VALUES (%s, %s, %s::jsonb)"
            " ON CONFLICT (collection, key) DO UPDATE SET document = excluded.document"
            " WHERE coalesce(documents.document ->> %s, '')"
            ' COLLATE "C" < %s COLLATE "C"',
            (collection, key, json.dumps(document, default=str), order_field, order),
        )
        if cursor.rowcount != 1:
            return False
        await self.told([collection], key)
        return True

    async def delete(self, collection: str, key: str) -> None:
        await self._connection.execute(
            "DELETE FROM documents WHERE collection = %s AND key = %s", (collection, key)
        )
        await self.told([collection], key)

    async def append_to_list(self, collection: str, key: str, field: str, item: Any) -> bool:
        cursor = await self._connection.execute(
            "UPDATE documents SET document = jsonb_set(document, ARRAY[%s],"
            " (document -> %s) || jsonb_build_array(%s::jsonb))"
            " WHERE collection = %s AND key = %s AND jsonb_typeof(document -> %s) = 'array'",
            (field, field, json.dumps(item, default=str), collection, key, field),
        )
        if cursor.rowcount != 1:
            if await _get(self._connection, collection, key) is not None:
                raise no_list(collection, key, field)
            return False
        await self.told([collection], key)
        return True

    async def find(
        self, collection: str, equals: Mapping[str, str | int | bool] | None = None
    ) -> list[Document]:
        return await _find(self._connection, collection, equals or {}, {}, limit=None)

    async def position(self, projection: str) -> int:
        # Replicas of a service catch the same projection up at once: the row lock orders
        # them, and the later one sees the position the earlier one committed. The row must
        # exist for that, even before the first event (a missing row locks nothing).
        select = "SELECT position FROM projection_positions WHERE projection = %s FOR UPDATE"
        cursor = await self._connection.execute(select, (projection,))
        row = await cursor.fetchone()
        if row is None:
            await self._connection.execute(
                "INSERT INTO projection_positions (projection, position) VALUES (%s, 0)"
                " ON CONFLICT (projection) DO NOTHING",
                (projection,),
            )
            cursor = await self._connection.execute(select, (projection,))
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def set_position(self, projection: str, position: int) -> None:
        await self._connection.execute(
            "INSERT INTO projection_positions (projection, position) VALUES (%s, %s)"
            " ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
            (projection, position),
        )

    async def already_applied(self, projection: str, event_ids: Sequence[UUID]) -> set[UUID]:
        if not event_ids:
            return set()
        # Two replicas may hold the same events for a moment (a consumer-group rebalance hands
        # a partition over before the old owner committed): one after the other, the second
        # sees what the first applied.
        await self._connection.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PROJECTION_LOCK, projection)
        )
        cursor = await self._connection.execute(
            "SELECT event_id FROM projection_applied WHERE projection = %s AND event_id = ANY(%s)",
            (projection, list(event_ids)),
        )
        return {row[0] for row in await cursor.fetchall()}

    async def mark_applied(self, projection: str, event_ids: Sequence[UUID]) -> None:
        if not event_ids:
            return
        await self._connection.execute(
            "INSERT INTO projection_applied (projection, event_id)"
            " SELECT %s, unnest(%s::uuid[]) ON CONFLICT DO NOTHING",
            (projection, list(event_ids)),
        )

    async def mark_overwritten(self) -> None:
        # A mark of its own per transaction: a forgetting deletes only the marks it saw.
        await self._connection.execute("INSERT INTO forget_pending (mark) VALUES (%s)", (uuid4(),))


async def _get(connection: Connection, collection: str, key: str) -> Document | None:
    cursor = await connection.execute(
        "SELECT document FROM documents WHERE collection = %s AND key = %s", (collection, key)
    )
    row = await cursor.fetchone()
    return None if row is None else dict(row[0])


async def _find(
    connection: Connection,
    collection: str,
    equals: Mapping[str, str | int | bool],
    contains: Mapping[str, str],
    limit: int | None,
) -> list[Document]:
    clauses = ["collection = %s"]
    parameters: list[Any] = [collection]
    for field, value in equals.items():
        clauses.append("document -> %s = %s::jsonb")
        parameters.extend([field, json.dumps(value)])
    for field, value in contains.items():
        clauses.append("document -> %s @> %s::jsonb")
        parameters.extend([field, json.dumps([value])])
    query = f'SELECT document FROM documents WHERE {" AND ".join(clauses)} ORDER BY key COLLATE "C"'
    if limit is not None:
        query += " LIMIT %s"
        parameters.append(limit)
    cursor = await connection.execute(query, parameters)
    return [dict(row[0]) for row in await cursor.fetchall()]


def _range_clauses(collection: str, keys: KeyRange) -> tuple[str, list[Any]]:
    # Byte order (COLLATE "C") whatever the database's collation, as scan() orders.
    clauses = ["collection = %s", 'key COLLATE "C" > %s', 'key COLLATE "C" < %s']
    parameters: list[Any] = [collection, keys.low, keys.high]
    for field, values in keys.where.items():
        # Strings only, as the port says and SQLite does: ->> alone would turn 1 and true
        # into '1' and 'true'.
        clauses.append("jsonb_typeof(document -> %s) = 'string' AND document ->> %s = ANY(%s)")
        parameters.extend([field, field, list(values)])
    return " AND ".join(clauses), parameters
