"""Two replicas' read-model stores on one PostgreSQL schema, for tests that interleave their
writes (a read-then-write race between consumers of two processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from casetrail_platform.projections.postgres import PostgresReadModelStore
from tests.support.servers import postgres_dsn, schema_of_its_own


@asynccontextmanager
async def read_model_replicas(
    prefix: str,
) -> AsyncIterator[tuple[PostgresReadModelStore, PostgresReadModelStore]]:
    """Two stores (a connection each) on a fresh schema named from ``prefix``, dropped after."""
    async with schema_of_its_own(prefix) as schema:
        one = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        two = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        try:
            yield one, two
        finally:
            await one.close()
            await two.close()


async def waiting_for_a_lock(statement: str = "") -> None:
    """Until a statement of this database (one starting with ``statement``, when given) waits
    for another transaction's lock: one replica's write is then held by the other's."""
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as observer:
        for _ in range(1000):
            cursor = await observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND starts_with(query, %s)",
                (statement,),
            )
            row = await cursor.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"no statement ({statement or 'any'}) waited for another's lock")
