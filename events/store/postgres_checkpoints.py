"""Checkpoints in PostgreSQL, in the same schema as the service's events."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import sql

from events.checkpoints import CheckpointStore


class PostgresCheckpointStore(CheckpointStore):
    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, dsn: str, *, schema: str) -> PostgresCheckpointStore:
        connection = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, options=f"-c search_path={schema}"
        )
        await connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        )
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS checkpoints"
            " (name text PRIMARY KEY, position bigint NOT NULL)"
        )
        return cls(connection)

    async def load(self, name: str) -> int:
        async with self._lock:
            cursor = await self._connection.execute(
                "SELECT position FROM checkpoints WHERE name = %s", (name,)
            )
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def save(self, name: str, position: int) -> None:
        async with self._lock:
            await self._connection.execute(
                "INSERT INTO checkpoints (name, position) VALUES (%s, %s) ON CONFLICT (name)"
                " DO UPDATE SET position = greatest(checkpoints.position, excluded.position)",
                (name, position),
            )

    async def close(self) -> None:
        await self._connection.close()
