"""Checkpoints in SQLite, in the event store's own file."""

from __future__ import annotations

from casetrail_platform.checkpoints import CheckpointStore
from casetrail_platform.store.sqlite import SqliteEventStore


class SqliteCheckpointStore(CheckpointStore):
    """Checkpoints kept in the event store's own file, written by its single writer."""

    def __init__(self, store: SqliteEventStore) -> None:
        self._store = store

    async def load(self, name: str) -> int:
        row = await self._store.read(
            lambda c: c.execute(
                "SELECT position FROM checkpoints WHERE name = ?", (name,)
            ).fetchone()
        )
        return 0 if row is None else int(row[0])

    async def save(self, name: str, position: int) -> None:
        await self._store.writer.write(
            lambda c: c.execute(
                "INSERT INTO checkpoints (name, position) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE"
                " SET position = max(position, excluded.position)",
                (name, position),
            )
        )
