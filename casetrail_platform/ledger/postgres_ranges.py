"""How a worker process reads a PostgreSQL event store (``store_ranges``), and the SQL both it and
``PostgresLedgerStore.store_leaves`` hash the events by. Kept apart from the adapter so that a
worker starts on little more than ``psycopg``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from casetrail_platform.ledger.canonical import LEAF_PREFIX
from casetrail_platform.ledger.store_ranges import (
    RangeHasher,
    RangeHashes,
    RangeReader,
    dense_hashes,
)
from casetrail_platform.store.pg_connections import CONNECT_TIMEOUT_SECONDS


def _micros(column: str) -> str:
    """A ``timestamptz`` as integer microseconds since the Unix epoch, exactly: ``extract``
    gives the seconds as a ``numeric`` with six decimals (PostgreSQL 14 on; ``date_part``'s
    float would round)."""
    return (
        f"pg_catalog.int8(pg_catalog.numeric_mul(pg_catalog.extract('epoch', {column}), 1000000))"
    )


_CANONICAL_TEXT = (
    "position::text", "event_id::text", "stream", "sequence::text", "event_type",
    "schema_version::text", "source", "actor_id", "actor_role", "correlation_id::text",
    "coalesce(causation_id::text, '')", f"{_micros('occurred_at')}::text",
    f"{_micros('recorded_at')}::text", "subject",
)  # fmt: skip
_LEAF_INPUT = (
    f"pg_catalog.byteacat(pg_catalog.byteacat('\\x{LEAF_PREFIX.hex()}'::bytea,"
    " pg_catalog.convert_to(pg_catalog.concat("
    + ", ".join(f"pg_catalog.octet_length({text}), ':', {text}, ','" for text in _CANONICAL_TEXT)
    + "), 'UTF8')), pg_catalog.byteacat(pg_catalog.convert_to(pg_catalog.concat("
    "pg_catalog.octet_length(data), ':'), 'UTF8'), pg_catalog.byteacat(data, '\\x2c'::bytea)))"
)
"""A stored event's whole leaf input (``canonical``), written by the server: the 14 netstrings
before the data as one text (uuids and numbers by their types' output: lower-case hyphenated,
decimal; ``octet_length`` is the UTF-8 length, the store's database being UTF8), then the data's
netstring in bytes (every byte kept, NULs too). Every function is named with its schema, so
that none planted on the search path answers for it (casts and ``coalesce`` are not looked up
there)."""
LEAF_HASHES = f"position, pg_catalog.sha256({_LEAF_INPUT})"
"""(position, leaf hash) of stored events, hashed by the server: a worker (or the ledger's
follower) receives 40 bytes a row and formats nothing. It costs the server about 5 µs an event
(its string functions: ``concat``, ``format`` or ``||`` alike), where sending the 15 columns
cost it 1.4 µs and the worker 4 µs more to format and hash them: a little less in all, and
none of it in the service's process."""


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
        query = sql.SQL(
            f"SELECT {LEAF_HASHES} FROM {{}} WHERE position > %s AND position <= %s"
            " ORDER BY position"
        ).format(sql.Identifier(self.schema, "stored_events"))

        def hash_range(start: int, stop: int) -> RangeHashes:
            rows = connection.cursor(binary=True).execute(query, (start, stop)).fetchall()
            return dense_hashes(rows, start, stop)

        return hash_range, connection.close
