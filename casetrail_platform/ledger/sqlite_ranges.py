"""How a worker process reads a SQLite event store (``store_ranges``), and the SQL both it and
``SqliteLedgerStore.store_leaves`` hash the events by. Kept apart from the adapter so that a
worker starts on little more than ``sqlite3``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from casetrail_platform.ledger.canonical import LEAF_PREFIX, leaf_hashes_of_inputs
from casetrail_platform.ledger.store_ranges import (
    RangeHasher,
    RangeHashes,
    RangeReader,
    dense_hashes,
)

_CANONICAL_FIELDS = (
    "position", "event_id", "stream", "sequence", "event_type", "schema_version", "source",
    "actor_id", "actor_role", "correlation_id", "coalesce(causation_id, '')", "occurred_at",
    "recorded_at", "subject",
)  # fmt: skip
_LEAF_INPUT = (
    f"CAST(x'{LEAF_PREFIX.hex()}' || printf('"
    + "%d:%s," * len(_CANONICAL_FIELDS)
    + "', "
    + ", ".join(f"length(CAST({field} AS BLOB)), {field}" for field in _CANONICAL_FIELDS)
    + ") || length(data) || ':' || data || ',' AS BLOB)"
)
"""A stored event's whole leaf input, written by SQLite (``canonical.leaf_hashes_of_inputs``):
the 14 netstrings before the data in one ``printf`` (ids are stored as text, times as integer
microseconds; the length is the UTF-8 length), which costs it less than Python spends on
fetching the 14 values one by one; ``||`` keeps every byte of the data (``printf``'s ``%s``
would stop at a NUL)."""
STORED_LEAVES_SQL = (
    f"SELECT position, {_LEAF_INPUT} FROM events.stored_events WHERE position > ?"
    " ORDER BY position LIMIT ?"
)
_RANGE_SQL = (
    f"SELECT {_LEAF_INPUT} FROM stored_events WHERE position > ? AND position <= ?"
    " ORDER BY position"
)
_RANGE_WITH_POSITIONS_SQL = (
    f"SELECT position, {_LEAF_INPUT} FROM stored_events WHERE position > ? AND position <= ?"
    " ORDER BY position"
)


@dataclass(frozen=True)
class SqliteRanges(RangeReader):
    """A worker reads the event file on a read-only connection of its own (WAL: readers run
    side by side, and never wait for appends)."""

    events_path: Path

    def open(self) -> tuple[RangeHasher, Callable[[], None]]:
        connection = sqlite3.connect(read_only_uri(self.events_path), uri=True)
        connection.execute("PRAGMA busy_timeout=10000")

        def hash_range(start: int, stop: int) -> RangeHashes:
            # Positions are the table's integer key: as many rows as the range holds positions
            # are every one, so the rows come without theirs (0.1 µs a row less), and only a
            # range with a hole is read again to name it.
            leaves = connection.execute(_RANGE_SQL, (start, stop))
            hashes = [sha256(leaf).digest() for (leaf,) in leaves]
            if len(hashes) == stop - start:
                return b"".join(hashes), None
            rows = connection.execute(_RANGE_WITH_POSITIONS_SQL, (start, stop))
            return dense_hashes(leaf_hashes_of_inputs(rows), start, stop)

        return hash_range, connection.close


def read_only_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"
