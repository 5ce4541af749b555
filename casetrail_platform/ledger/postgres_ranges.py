"""How a worker process reads a PostgreSQL event store (``store_ranges``), and the columns both
it and ``PostgresLedgerStore.store_leaves`` hash the events from. Kept apart from the adapter so
that a worker starts on little more than ``psycopg``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.adapt import AdaptersMap
from psycopg.types.numeric import Int8BinaryLoader
from psycopg.types.string import ByteaBinaryLoader

from casetrail_platform.ledger.canonical import leaf_hashes
from casetrail_platform.ledger.store_ranges import (
    RangeHasher,
    RangeHashes,
    RangeReader,
    dense_hashes,
)
from casetrail_platform.store.pg_connections import CONNECT_TIMEOUT_SECONDS

UNIX_EPOCH_IN_POSTGRES_MICROS = 946_684_800_000_000
"""PostgreSQL counts timestamps in microseconds from 2000-01-01 UTC."""

STORED_COLUMNS = (
    "position, data, event_id::text, stream, sequence, event_type, schema_version, source,"
    " actor_id, actor_role, correlation_id::text, coalesce(causation_id::text, ''),"
    " occurred_at, recorded_at, subject"
)
"""Stored events in the row shape of ``canonical.leaf_hashes`` (with ``raw_loaders``)."""


def raw_loaders(adapters: AdaptersMap) -> None:
    """Text as its bytes and a ``timestamptz`` as its 8-byte integer of microseconds (its
    binary form), both by C loaders."""
    adapters.register_loader("text", ByteaBinaryLoader)
    adapters.register_loader("timestamptz", Int8BinaryLoader)


@dataclass(frozen=True)
class PostgresRanges(RangeReader):
    """A worker reads the events on a connection of its own, read only, inside the snapshot
    the parent exported (``pg_export_snapshot``): every worker sees the one store the parent
    counted, whatever is appended meanwhile."""

    dsn: str = field(repr=False)
    schema: str
    snapshot: str

    def open(self) -> tuple[RangeHasher, Callable[[], None]]:
        connection = psycopg.connect(
            self.dsn,
            options="-c default_transaction_read_only=on",
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        # The first statement of the worker's one transaction, held for every range it hashes.
        connection.execute(
            sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot))
        )
        raw_loaders(connection.adapters)
        query = sql.SQL(
            f"SELECT {STORED_COLUMNS} FROM {{}} WHERE position > %s AND position <= %s"
            " ORDER BY position"
        ).format(sql.Identifier(self.schema, "stored_events"))

        def hash_range(start: int, stop: int) -> RangeHashes:
            rows = connection.cursor(binary=True).execute(query, (start, stop)).fetchall()
            return dense_hashes(leaf_hashes(rows, UNIX_EPOCH_IN_POSTGRES_MICROS), start, stop)

        return hash_range, connection.close
