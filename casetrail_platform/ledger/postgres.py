"""The ledger of a PostgreSQL event store: tables in the store's own schema.

Following or verifying a store has the server hash the events (``postgres_ranges.LEAF_HASHES``:
the canonical bytes built in SQL from the stored columns, and their SHA-256), so that a row
comes back as its position and 32 bytes: about 5 µs of the server's CPU an event, where
sending the 15 columns and formatting and hashing them in Python cost 1.4 µs of the server's and
4-5 µs of this process's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql

from casetrail_platform.errors import StorageConfigurationError, StorageUnavailableError
from casetrail_platform.ledger import tiles
from casetrail_platform.ledger.merkle import HASH_SIZE, Hash, HashRun
from casetrail_platform.ledger.port import (
    LedgerConflict,
    LedgerNotCreated,
    LedgerStore,
    StoredCheckpoint,
)
from casetrail_platform.ledger.postgres_ranges import LEAF_HASHES, PostgresRanges
from casetrail_platform.ledger.store_ranges import StoreRanges
from casetrail_platform.store.pg_connections import Connection, PgConnections, open_connection

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {schema}.ledger_tiles (
    level smallint NOT NULL,
    idx bigint NOT NULL,
    hashes bytea NOT NULL,
    CONSTRAINT ledger_tiles_pkey PRIMARY KEY (level, idx)
);
ALTER TABLE {schema}.ledger_tiles ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS {schema}.ledger_checkpoints (
    size bigint PRIMARY KEY,
    note text NOT NULL
);
"""
"""Hashes do not compress: ``EXTERNAL`` spares the server trying on every 8 KiB tile."""

Row = tuple[Any, ...]

READER_ROLE = "casetrail_ledger_reader"
"""The role other services read a ledger as (``connect_reader``): USAGE on the store's schema
and SELECT on ``ledger_tiles`` and ``ledger_checkpoints``, nothing else."""


class PostgresLedgerStore(LedgerStore):
    def __init__(
        self, connections: PgConnections, schema: str, events_dsn: str | None = None
    ) -> None:
        """Use ``connect()``. One connection, reopened after a server restart
        (``PgConnections``); while the database is away, ``StorageUnavailableError``.
        ``events_dsn``: a login that may read the events (``store_ranges``), if this one may."""
        self._connections = connections
        self._schema = schema
        self._events_dsn = events_dsn
        table = sql.Identifier(schema, "ledger_tiles")
        checkpoints = sql.Identifier(schema, "ledger_checkpoints")
        events = sql.Identifier(schema, "stored_events")
        self._size_sql = sql.SQL(
            "SELECT idx, octet_length(hashes) FROM {} WHERE level = 0 ORDER BY idx DESC LIMIT 1"
        ).format(table)
        # A new tile only after a full one (or as the first): never a gap.
        self._insert_sql = sql.SQL(
            "INSERT INTO {table} (level, idx, hashes) SELECT %(level)s, %(idx)s, %(hashes)s"
            " WHERE %(idx)s = 0 OR EXISTS (SELECT 1 FROM {table} WHERE level = %(level)s"
            " AND idx = %(idx)s - 1 AND octet_length(hashes) = %(full)s)"
        ).format(table=table)
        # Extends the last tile of a level only if it holds what the writer saw: a replica
        # that appended in between makes this update no row (a conflict).
        self._extend_sql = sql.SQL(
            "UPDATE {} SET hashes = hashes || %s WHERE level = %s AND idx = %s"
            " AND octet_length(hashes) = %s"
        ).format(table)
        # A correlated look-up per slice: always the primary key's index, whatever the
        # planner believes of a young table's size; ``substring`` of an uncompressed
        # (EXTERNAL) value reads only the TOAST chunks it needs.
        self._slices_sql = sql.SQL(
            "SELECT (SELECT substring(t.hashes FROM k.start FOR k.length) FROM {} t"
            " WHERE t.level = k.level AND t.idx = k.idx)"
            " FROM unnest(%s::smallint[], %s::bigint[], %s::int[], %s::int[])"
            " WITH ORDINALITY AS k(level, idx, start, length, n) ORDER BY k.n"
        ).format(table)
        self._leaf_tiles_sql = sql.SQL(
            "SELECT idx, hashes FROM {} WHERE level = 0 AND idx BETWEEN %s AND %s ORDER BY idx"
        ).format(table)
        self._store_leaves_sql = sql.SQL(
            f"SELECT {LEAF_HASHES} FROM {{}} WHERE position > %s ORDER BY position LIMIT %s"
        ).format(events)
        self._last_sql = sql.SQL("SELECT coalesce(max(position), 0) FROM {}").format(events)
        self._snapshot_sql = sql.SQL(
            "SELECT pg_export_snapshot(), coalesce(max(position), 0) FROM {}"
        ).format(events)
        self._save_sql = sql.SQL(
            "INSERT INTO {} (size, note) VALUES (%s, %s) ON CONFLICT (size) DO NOTHING"
        ).format(checkpoints)
        self._checkpoints_sql = sql.SQL(
            "SELECT size, note FROM {} WHERE size > %s ORDER BY size LIMIT %s"
        ).format(checkpoints)
        self._latest_sql = sql.SQL("SELECT size, note FROM {} ORDER BY size DESC LIMIT 1").format(
            checkpoints
        )

    @classmethod
    async def connect(cls, dsn: str, *, schema: str) -> PostgresLedgerStore:
        """Connect to the event store in ``schema`` (which must exist), creating the ledger's
        tables where missing and granting ``READER_ROLE`` read access to them."""
        # Derived data, recomputable from the events: commits need not wait for the WAL
        # flush (a crash loses at most the last hashes, which the follower redoes).
        connections = PgConnections(
            dsn, 1, f"{schema} ledger", settings="-c synchronous_commit=off"
        )

        async def create(connection: Connection) -> None:
            script = sql.SQL(_SCHEMA).format(schema=sql.Identifier(schema))
            async with connection.transaction():
                # Services starting together must not create the same objects at once.
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ledger:{schema}",)
                )
                await connection.execute(script)
                await _tile_old_nodes(connection, schema)
                await _grant_reader(connection, schema)

        try:
            await connections.run(create)
        except BaseException:
            await connections.close()
            raise
        return cls(connections, schema, dsn)

    @classmethod
    async def connect_reader(cls, dsn: str, *, schema: str) -> PostgresLedgerStore:
        """Read another service's ledger as ``READER_ROLE`` in read-only transactions: its
        hashes and checkpoints, never its events, and no write of any kind (audit, the
        witness). The DSN's user must be a member of ``READER_ROLE``; raises
        ``StorageConfigurationError`` if it is not (or the role does not exist, or may not read
        this ledger), ``LedgerNotCreated`` if the ledger does not exist (yet, or any more), and
        ``StorageUnavailableError`` while the server is away."""
        connections = PgConnections(
            dsn,
            1,
            f"{schema} ledger (read only)",
            settings=f"-c role={READER_ROLE} -c default_transaction_read_only=on",
        )
        probe = sql.SQL("SELECT 1 FROM {} LIMIT 0").format(
            sql.Identifier(schema, "ledger_checkpoints")
        )

        def refusal(error: BaseException) -> Exception | None:
            problem = _reader_role_problem(error, schema)
            if problem is not None:
                return StorageConfigurationError(problem)
            if isinstance(error, psycopg.errors.UndefinedTable):
                # Told apart from an outage: the witness alarms on a log it held that is gone.
                return LedgerNotCreated(f"{schema} holds no ledger tables")
            return None

        await _probe(connections, probe, refusal)
        return cls(connections, schema)

    @classmethod
    async def connect_read_only(cls, dsn: str, *, schema: str) -> PostgresLedgerStore:
        """Read the service's ledger and its events with the DSN's own rights, in read-only
        transactions: creates, grants and migrates nothing (``verify-store``, an auditor's
        check). The login needs only USAGE on the schema and SELECT on ``stored_events``,
        ``ledger_tiles`` and ``ledger_checkpoints``. Raises ``LedgerNotCreated`` if the
        ledger's tables are missing, ``StorageConfigurationError`` if the login may not read
        them."""
        connections = PgConnections(
            dsn,
            1,
            f"{schema} ledger (read only)",
            settings="-c default_transaction_read_only=on",
        )
        probe = sql.SQL("SELECT 1 FROM {}, {}, {} LIMIT 0").format(
            sql.Identifier(schema, "ledger_tiles"),
            sql.Identifier(schema, "ledger_checkpoints"),
            sql.Identifier(schema, "stored_events"),
        )

        def refusal(error: BaseException) -> Exception | None:
            if isinstance(error, psycopg.errors.UndefinedTable):
                return LedgerNotCreated(f"{schema} holds no ledger tables")
            if isinstance(error, psycopg.errors.InsufficientPrivilege):
                return StorageConfigurationError(
                    f"this login may not read {schema}: reading a ledger read only needs USAGE"
                    f" on the schema and SELECT on {schema}.stored_events, ledger_tiles and"
                    " ledger_checkpoints"
                )
            return None

        await _probe(connections, probe, refusal)
        return cls(connections, schema, dsn)

    async def close(self) -> None:
        await self._connections.close()

    async def _fetch(self, query: sql.Composed, parameters: Sequence[Any]) -> list[Row]:
        async def fetch(connection: Connection) -> list[Row]:
            cursor = await connection.execute(query, parameters)
            return await cursor.fetchall()

        try:
            return await self._connections.run(fetch)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            # Dropped since it was opened: told as at opening (``connect_reader``), so that
            # audit's witness alarms on a log gone rather than call it unchecked for ever.
            raise LedgerNotCreated(f"{self._schema} holds no ledger tables") from None

    async def size(self) -> int:
        rows = await self._fetch(self._size_sql, ())
        return tiles.size_of((int(rows[0][0]), int(rows[0][1])) if rows else None)

    async def append(self, first_index: int, runs: Sequence[HashRun]) -> None:
        planned = tiles.writes(runs)
        try:
            # No size query first: the level-0 write is the check. It extends the last leaf
            # tile only if that holds exactly the leaves before ``first_index``, or adds a
            # tile that must not exist yet (a unique violation otherwise).
            async with self._connections.connection() as connection, connection.transaction():
                for write in planned:
                    await _write_tile(connection, write, self._insert_sql, self._extend_sql)
        except psycopg.errors.UniqueViolation:
            raise LedgerConflict("another writer appended to the ledger first") from None

    async def read_slices(self, slices: Sequence[tiles.TileSlice]) -> list[bytes | None]:
        wanted = list(slices)
        if not wanted:
            return []
        rows = await self._fetch(
            self._slices_sql,
            (
                [level for level, _, _, _ in wanted],
                [index for _, index, _, _ in wanted],
                [offset * HASH_SIZE + 1 for _, _, offset, _ in wanted],
                [count * HASH_SIZE for _, _, _, count in wanted],
            ),
        )
        return [None if packed is None else bytes(packed) for (packed,) in rows]

    async def leaf_tiles(self, first: int, last: int) -> list[tuple[int, bytes]]:
        rows = await self._fetch(self._leaf_tiles_sql, (first, last))
        return [(int(index), bytes(hashes)) for index, hashes in rows]

    async def store_leaves(self, after_position: int, limit: int) -> list[tuple[int, Hash]]:
        async def fetch(connection: Connection) -> list[Row]:
            cursor = connection.cursor(binary=True)
            await cursor.execute(self._store_leaves_sql, (after_position, limit))
            return await cursor.fetchall()

        return [(position, leaf) for position, leaf in await self._connections.run(fetch)]

    async def store_last_position(self) -> int:
        [(last,)] = await self._fetch(self._last_sql, ())
        return int(last)

    @asynccontextmanager
    async def store_ranges(self) -> AsyncIterator[StoreRanges | None]:
        if self._events_dsn is None:
            yield None
            return
        # A connection of its own, outside ``PgConnections``: it holds the exported snapshot
        # open (a repeatable-read transaction) until every worker is done with it.
        connection = await open_connection(
            self._events_dsn,
            f"{self._connections.what} (snapshot)",
            settings="-c default_transaction_read_only=on",
        )
        try:
            await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor = await connection.execute(self._snapshot_sql)
            found = await cursor.fetchone()
            assert found is not None
            snapshot, last = found
            yield StoreRanges(
                PostgresRanges(self._events_dsn, self._schema, str(snapshot)), int(last)
            )
        finally:
            await connection.close()

    async def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        async def save(connection: Connection) -> None:
            await connection.execute(self._save_sql, (checkpoint.size, checkpoint.note))

        await self._connections.run(save)

    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[StoredCheckpoint]:
        rows = await self._fetch(self._checkpoints_sql, (after_size, limit))
        return [StoredCheckpoint(int(size), note) for size, note in rows]

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        rows = await self._fetch(self._latest_sql, ())
        return None if not rows else StoredCheckpoint(int(rows[0][0]), rows[0][1])


async def _write_tile(
    connection: Connection,
    write: tiles.TileWrite,
    insert: sql.Composed,
    extend: sql.Composed,
) -> None:
    key = (write.level, write.index)
    if write.offset == 0:
        cursor = await connection.execute(
            insert,
            {
                "level": write.level,
                "idx": write.index,
                "hashes": write.hashes,
                "full": tiles.TILE_WIDTH * HASH_SIZE,
            },
        )
        if cursor.rowcount != 1:
            raise LedgerConflict(f"tile {key} would leave a gap")
        return
    cursor = await connection.execute(extend, (write.hashes, *key, write.offset * HASH_SIZE))
    if cursor.rowcount != 1:
        raise LedgerConflict(f"tile {key} does not hold {write.offset} hashes")


async def _tile_old_nodes(connection: Connection, schema: str) -> None:
    """A ledger written before tiles kept one row per subtree (``ledger_nodes``): its stored
    levels move into tiles once (in the caller's transaction)."""
    cursor = await connection.execute("SELECT to_regclass(%s)", (f'"{schema}".ledger_nodes',))
    found = await cursor.fetchone()
    if found is None or found[0] is None:
        return
    nodes = sql.Identifier(schema, "ledger_nodes")
    table = sql.Identifier(schema, "ledger_tiles")
    cursor = await connection.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
    counted = await cursor.fetchone()
    if counted is not None and counted[0] == 0:
        runs: list[HashRun] = []
        for level in range(0, 64, tiles.TILE_HEIGHT):
            cursor = await connection.execute(
                sql.SQL("SELECT idx, hash FROM {} WHERE level = %s ORDER BY idx").format(nodes),
                (level,),
            )
            rows = await cursor.fetchall()
            if rows:
                runs.append((level, int(rows[0][0]), [bytes(digest) for _, digest in rows]))
        insert = sql.SQL("INSERT INTO {} (level, idx, hashes) VALUES (%s, %s, %s)").format(table)
        for write in tiles.writes(runs):
            await connection.execute(insert, (write.level, write.index, write.hashes))
    await connection.execute(sql.SQL("DROP TABLE {}").format(nodes))


async def _probe(
    connections: PgConnections,
    probe: sql.Composed,
    refusal: Callable[[BaseException], Exception | None],
) -> None:
    """Run ``probe`` once on the new ``connections``, which are closed if it fails; the failure
    is raised as ``refusal`` names it (from the error), or as it came (``None``)."""

    async def check(connection: Connection) -> None:
        await connection.execute(probe)

    try:
        await connections.run(check)
    except BaseException as error:
        await connections.close()
        named = refusal(error)
        if named is not None:
            raise named from error
        raise


def _reader_role_problem(error: BaseException, schema: str) -> str | None:
    """What to configure when ``connect_reader`` failed for want of ``READER_ROLE`` (``None``:
    another failure, e.g. the server away or the ledger not created yet).

    The server refuses ``-c role=`` while logging in ("role ... does not exist", "permission
    denied to set role ..."): libpq reports that as a failed connection, with no SQLSTATE, so
    it would pass for an outage and be retried for ever. The server's text names the role
    (quoted, in every language it speaks), which tells the two apart."""
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return (
            f"{READER_ROLE} may not read the ledger in {schema}: its service grants that at"
            " start-up when the role exists; restart the service, or run the grants of README"
            ' "Audit\'s read-only access (PostgreSQL)"'
        )
    cause = error.__cause__ if isinstance(error, StorageUnavailableError) else error
    if isinstance(cause, psycopg.OperationalError) and f'"{READER_ROLE}"' in str(cause):
        return (
            f"this login cannot act as {READER_ROLE} (the role is missing, or the login is not"
            f" a member: GRANT {READER_ROLE} TO <audit's login>); see README \"Audit's"
            ' read-only access (PostgreSQL)"'
        )
    return None


async def _grant_reader(connection: Connection, schema: str) -> None:
    """Create ``READER_ROLE`` where missing and let it read this ledger (only). Without the
    privilege to (the service's user lacks CREATEROLE or ownership), the service still runs:
    an administrator then runs the grants (README, "Verifiable history")."""
    try:
        async with connection.transaction():  # a savepoint: a refusal spoils nothing else
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", ("ledger-reader-role",)
            )
            cursor = await connection.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)
            )
            if await cursor.fetchone() is None:
                await connection.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(READER_ROLE))
                )
            role = sql.Identifier(READER_ROLE)
            await connection.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role)
            )
            await connection.execute(
                sql.SQL("GRANT SELECT ON {}, {} TO {}").format(
                    sql.Identifier(schema, "ledger_tiles"),
                    sql.Identifier(schema, "ledger_checkpoints"),
                    role,
                )
            )
    except psycopg.errors.InsufficientPrivilege:
        log.warning(
            "%s ledger: may not create or grant the role %s; audit reads this ledger only"
            " once an administrator has run the grants",
            schema,
            READER_ROLE,
        )
