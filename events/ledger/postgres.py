"""The ledger of a PostgreSQL event store: tables in the store's own schema.

The database hashes the leaves itself (``ledger_leaf_hash``: the canonical bytes of
``events.ledger.canonical`` built in SQL, then SHA-256), so following or verifying a store moves
32 bytes per event, not the event, and the hashing runs in the server process alongside ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from events.ledger.canonical import TAG
from events.ledger.merkle import Hash, SubtreeKey
from events.ledger.port import LedgerConflict, LedgerStore, StoredCheckpoint
from events.store.pg_connections import Connection, PgConnections

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {schema}.ledger_nodes (
    level smallint NOT NULL,
    idx bigint NOT NULL,
    hash bytea NOT NULL,
    CONSTRAINT ledger_nodes_pkey PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS {schema}.ledger_checkpoints (
    size bigint PRIMARY KEY,
    note text NOT NULL
);
"""

Row = tuple[Any, ...]


def _field(expression: str) -> str:
    text = f"coalesce({expression}, '')"
    return f"convert_to(octet_length({text})::text || ':' || {text} || ',', 'UTF8')"


def _micros(column: str) -> str:
    return f"((extract(epoch FROM {column}) * 1000000)::bigint)::text"


_TEXT_FIELDS = [
    "e.position::text",
    "e.event_id::text",
    "e.stream",
    "e.sequence::text",
    "e.event_type",
    "e.schema_version::text",
    "e.source",
    "e.actor_id",
    "e.actor_role",
    "e.correlation_id::text",
    "e.causation_id::text",
    _micros("e.occurred_at"),
    _micros("e.recorded_at"),
    "e.subject",
]
LEAF_HASH_SQL = (
    "sha256('\\x00'::bytea || {tag} || "
    + " || ".join(_field(field) for field in _TEXT_FIELDS)
    + " || convert_to(octet_length(e.data)::text || ':', 'UTF8') || e.data || '\\x2c'::bytea)"
)
"""The leaf hash of stored event ``e``: SHA-256 of 0x00 and the canonical bytes of
``events.ledger.canonical``, written out inline so that the planner evaluates it as one
expression per row (a SQL function taking the row would be called, not inlined)."""


class PostgresLedgerStore(LedgerStore):
    def __init__(self, connections: PgConnections, schema: str) -> None:
        """Use ``connect()``. One connection, reopened after a server restart
        (``PgConnections``); while the database is away, ``StorageUnavailableError``."""
        self._connections = connections
        table = sql.Identifier(schema, "ledger_nodes")
        checkpoints = sql.Identifier(schema, "ledger_checkpoints")
        events = sql.Identifier(schema, "stored_events")
        self._size_sql = sql.SQL("SELECT max(idx) FROM {} WHERE level = 0").format(table)
        self._insert_sql = sql.SQL(
            "INSERT INTO {} (level, idx, hash) SELECT * FROM unnest(%s::smallint[],"
            " %s::bigint[], %s::bytea[])"
        ).format(table)
        # A correlated look-up per key: always the primary key's index, whatever the planner
        # believes of a young table's size.
        self._subtrees_sql = sql.SQL(
            "SELECT k.level, k.idx, (SELECT n.hash FROM {} n WHERE n.level = k.level"
            " AND n.idx = k.idx) FROM unnest(%s::smallint[], %s::bigint[]) AS k(level, idx)"
        ).format(table)
        self._leaves_sql = sql.SQL(
            "SELECT hash FROM {} WHERE level = 0 AND idx >= %s ORDER BY idx LIMIT %s"
        ).format(table)
        tag_field = b"%d:%s," % (len(TAG), TAG)
        self._store_leaves_sql = sql.SQL(
            "SELECT e.position, " + LEAF_HASH_SQL + " FROM {events} e WHERE e.position > %s"
            " ORDER BY e.position LIMIT %s"
        ).format(tag=sql.Literal(tag_field), events=events)
        self._last_sql = sql.SQL("SELECT coalesce(max(position), 0) FROM {}").format(events)
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
        tables where missing."""
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

        try:
            await connections.run(create)
        except BaseException:
            await connections.close()
            raise
        return cls(connections, schema)

    async def close(self) -> None:
        await self._connections.close()

    async def _fetch(self, query: sql.Composed, parameters: Sequence[Any]) -> list[Row]:
        async def fetch(connection: Connection) -> list[Row]:
            cursor = await connection.execute(query, parameters)
            return await cursor.fetchall()

        return await self._connections.run(fetch)

    async def size(self) -> int:
        [(last,)] = await self._fetch(self._size_sql, ())
        return 0 if last is None else int(last) + 1

    async def append(self, first_index: int, nodes: Sequence[tuple[SubtreeKey, Hash]]) -> None:
        try:
            async with self._connections.connection() as connection, connection.transaction():
                cursor = await connection.execute(self._size_sql)
                row = await cursor.fetchone()
                size = 0 if row is None or row[0] is None else int(row[0]) + 1
                if size != first_index:
                    raise LedgerConflict(f"the ledger is not at {first_index} leaves")
                await connection.execute(
                    self._insert_sql,
                    (
                        [level for (level, _), _ in nodes],
                        [index for (_, index), _ in nodes],
                        [digest for _, digest in nodes],
                    ),
                )
        except psycopg.errors.UniqueViolation:
            raise LedgerConflict("another writer appended to the ledger first") from None

    async def subtrees(self, keys: Iterable[SubtreeKey]) -> Mapping[SubtreeKey, Hash]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        rows = await self._fetch(
            self._subtrees_sql, ([level for level, _ in wanted], [index for _, index in wanted])
        )
        return {
            (int(level), int(index)): bytes(digest)
            for level, index, digest in rows
            if digest is not None
        }

    async def leaf_hashes(self, first_index: int, limit: int) -> list[Hash]:
        rows = await self._fetch(self._leaves_sql, (first_index, limit))
        return [bytes(row[0]) for row in rows]

    async def store_leaves(self, after_position: int, limit: int) -> list[tuple[int, Hash]]:
        rows = await self._fetch(self._store_leaves_sql, (after_position, limit))
        return [(int(position), bytes(digest)) for position, digest in rows]

    async def store_last_position(self) -> int:
        [(last,)] = await self._fetch(self._last_sql, ())
        return int(last)

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
