"""Parked records in PostgreSQL, in the same schema as the service's events and checkpoint.

The lot is touched rarely (a refusal, an operator's retry, a look every few seconds while
something is parked), so each call opens its own short connection: nothing to keep alive,
and a database restart between two calls goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

from casetrail_platform.parking import ParkedRecord, ParkingLot
from casetrail_platform.store.pg_connections import creating_schema, open_connection

_COLUMNS = (
    "relay, position, event_id, key, stream, sequence, event_type, reason, parked_at,"
    " retry_requested"
)


class PostgresParkingLot(ParkingLot):
    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self._schema = schema

    @classmethod
    async def connect(cls, dsn: str, *, schema: str) -> PostgresParkingLot:
        lot = cls(dsn, schema)
        async with (
            await lot._connection() as connection,
            creating_schema(connection, schema),
        ):
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS parked_records ("
                " relay text NOT NULL, position bigint NOT NULL, event_id uuid NOT NULL,"
                " key text NOT NULL, stream text NOT NULL, sequence bigint NOT NULL,"
                " event_type text NOT NULL, reason text NOT NULL,"
                " parked_at timestamptz NOT NULL,"
                " retry_requested boolean NOT NULL DEFAULT false,"
                " PRIMARY KEY (relay, position))"
            )
        return lot

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        # The platform's one way to connect: bounded by CONNECT_TIMEOUT_SECONDS (a server that
        # neither accepts nor refuses held a parking call, and the relay with it, until it
        # was stopped) and UTC for the parked_at times.
        return await open_connection(self._dsn, "the relay's parking lot", search_path=self._schema)

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        if not records:
            return
        async with await self._connection() as connection, connection.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO parked_records ({_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (relay, position) DO NOTHING",
                [
                    (
                        r.relay,
                        r.position,
                        r.event_id,
                        r.key,
                        r.stream,
                        r.sequence,
                        r.event_type,
                        r.reason,
                        r.parked_at,
                        r.retry_requested,
                    )
                    for r in records
                ],
            )

    async def parked(self, relay: str) -> list[ParkedRecord]:
        async with await self._connection() as connection:
            cursor = await connection.execute(
                f"SELECT {_COLUMNS} FROM parked_records WHERE relay = %s ORDER BY position",
                (relay,),
            )
            rows = await cursor.fetchall()
        return [
            ParkedRecord(
                relay=row[0],
                position=int(row[1]),
                event_id=row[2] if isinstance(row[2], UUID) else UUID(str(row[2])),
                key=row[3],
                stream=row[4],
                sequence=int(row[5]),
                event_type=row[6],
                reason=row[7],
                parked_at=row[8],
                retry_requested=bool(row[9]),
            )
            for row in rows
        ]

    async def request_retry(self, relay: str, key: str | None = None) -> int:
        async with await self._connection() as connection:
            if key is None:
                cursor = await connection.execute(
                    "UPDATE parked_records SET retry_requested = true WHERE relay = %s", (relay,)
                )
            else:
                cursor = await connection.execute(
                    "UPDATE parked_records SET retry_requested = true"
                    " WHERE relay = %s AND key = %s",
                    (relay, key),
                )
            return cursor.rowcount

    async def retry_done(
        self, relay: str, key: str, refused: tuple[int, str] | None = None
    ) -> None:
        async with await self._connection() as connection, connection.transaction():
            await connection.execute(
                "UPDATE parked_records SET retry_requested = false WHERE relay = %s AND key = %s",
                (relay, key),
            )
            if refused is not None:
                await connection.execute(
                    "UPDATE parked_records SET reason = %s WHERE relay = %s AND position = %s",
                    (refused[1], relay, refused[0]),
                )

    async def release(self, relay: str, positions: Sequence[int]) -> None:
        if not positions:
            return
        async with await self._connection() as connection:
            await connection.execute(
                "DELETE FROM parked_records WHERE relay = %s AND position = ANY(%s)",
                (relay, list(positions)),
            )
