"""Parked records in SQLite, in the event store's own file beside the relay's checkpoint."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from casetrail_platform.parking import ParkedRecord, ParkingLot
from casetrail_platform.store.sqlite import SqliteEventStore


class SqliteParkingLot(ParkingLot):
    """Parked records kept in the event store's own file, beside the relay's checkpoint."""

    _COLUMNS = (
        "relay, position, event_id, key, stream, sequence, event_type, reason, parked_at,"
        " retry_requested"
    )

    def __init__(self, store: SqliteEventStore) -> None:
        self._store = store

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        rows = [
            (
                r.relay,
                r.position,
                str(r.event_id),
                r.key,
                r.stream,
                r.sequence,
                r.event_type,
                r.reason,
                r.parked_at.isoformat(),
                int(r.retry_requested),
            )
            for r in records
        ]
        await self._store.writer.write(
            lambda c: c.executemany(
                f"INSERT OR IGNORE INTO parked_records ({self._COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
        )

    async def parked(self, relay: str) -> list[ParkedRecord]:
        rows = await self._store.read(
            lambda c: c.execute(
                f"SELECT {self._COLUMNS} FROM parked_records WHERE relay = ? ORDER BY position",
                (relay,),
            ).fetchall()
        )
        return [
            ParkedRecord(
                relay=row[0],
                position=int(row[1]),
                event_id=UUID(row[2]),
                key=row[3],
                stream=row[4],
                sequence=int(row[5]),
                event_type=row[6],
                reason=row[7],
                parked_at=datetime.fromisoformat(row[8]),
                retry_requested=bool(row[9]),
            )
            for row in rows
        ]

    async def request_retry(self, relay: str, key: str | None = None) -> int:
        where, parameters = (
            ("relay = ?", (relay,))
            if key is None
            else (
                "relay = ? AND key = ?",
                (relay, key),
            )
        )
        return await self._store.writer.write(
            lambda c: int(
                c.execute(
                    f"UPDATE parked_records SET retry_requested = 1 WHERE {where}", parameters
                ).rowcount
            )
        )

    async def retry_done(
        self, relay: str, key: str, refused: tuple[int, str] | None = None
    ) -> None:
        def done(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE parked_records SET retry_requested = 0 WHERE relay = ? AND key = ?",
                (relay, key),
            )
            if refused is not None:
                connection.execute(
                    "UPDATE parked_records SET reason = ? WHERE relay = ? AND position = ?",
                    (refused[1], relay, refused[0]),
                )

        await self._store.writer.write(done)

    async def release(self, relay: str, positions: Sequence[int]) -> None:
        rows = [(relay, position) for position in positions]
        await self._store.writer.write(
            lambda c: c.executemany(
                "DELETE FROM parked_records WHERE relay = ? AND position = ?", rows
            )
        )
