"""Checkpoints in PostgreSQL, in the same schema as the service's events."""

from __future__ import annotations

from casetrail_platform.checkpoints import CheckpointStore
from casetrail_platform.store.pg_connections import Connection, PgConnections, creating_schema


class PostgresCheckpointStore(CheckpointStore):
    def __init__(self, connections: PgConnections) -> None:
        """Use ``connect()``. The connection is reopened after a server restart."""
        self._connections = connections

    @classmethod
    async def connect(cls, dsn: str, *, schema: str) -> PostgresCheckpointStore:
        connections = PgConnections(dsn, 1, f"{schema} checkpoints", search_path=schema)

        async def create(connection: Connection) -> None:
            async with creating_schema(connection, schema):
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS checkpoints"
                    " (name text PRIMARY KEY, position bigint NOT NULL)"
                )

        try:
            await connections.run(create)
        except BaseException:
            await connections.close()
            raise
        return cls(connections)

    async def load(self, name: str) -> int:
        async def load(connection: Connection) -> int:
            cursor = await connection.execute(
                "SELECT position FROM checkpoints WHERE name = %s", (name,)
            )
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        return await self._connections.run(load)

    async def save(self, name: str, position: int) -> None:
        async def save(connection: Connection) -> None:
            await connection.execute(
                "INSERT INTO checkpoints (name, position) VALUES (%s, %s) ON CONFLICT (name)"
                " DO UPDATE SET position = greatest(checkpoints.position, excluded.position)",
                (name, position),
            )

        await self._connections.run(save)

    async def close(self) -> None:
        await self._connections.close()
