"""The backends tests run the same steps on: casetrail's (embedded, distributed:
``on_each_backend``) and a service's own event store and read models on SQLite or PostgreSQL
(a fixture parametrized by ``BACKENDS`` opens them here)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.registry import EventRegistry
from tests.support.servers import postgres_dsn, schema_of_its_own

BACKENDS = ["sqlite", "postgres"]
"""The stores' two backends, as a test's parameters."""

CASETRAIL_BACKENDS = [
    "embedded",
    pytest.param("distributed", marks=[pytest.mark.postgres, pytest.mark.kafka]),
]
"""casetrail's two backends as a test's parameters: the distributed one needs the servers."""

on_each_backend = pytest.mark.parametrize("backend", CASETRAIL_BACKENDS)
"""A test taking ``backend``, run on the embedded and on the distributed backend."""


@asynccontextmanager
async def store_and_read_models(
    backend: str, directory: Path, registry: EventRegistry, prefix: str
) -> AsyncIterator[tuple[EventStore, ReadModelStore]]:
    """Both opened fresh on ``backend`` (files in ``directory``, or a PostgreSQL schema named
    from ``prefix``), closed (the schema dropped) after."""
    store: EventStore
    read_models: ReadModelStore
    if backend == "sqlite":
        store = await SqliteEventStore.open(directory / "events.db", registry)
        read_models = SqliteReadModelStore(directory / "read-models.db")
        try:
            yield store, read_models
        finally:
            await read_models.close()
            await store.close()
        return
    from casetrail_platform.projections.postgres import PostgresReadModelStore
    from casetrail_platform.store.postgres import PostgresEventStore

    async with schema_of_its_own(prefix) as schema:
        store = await PostgresEventStore.connect(postgres_dsn(), registry, schema=schema)
        read_models = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        try:
            yield store, read_models
        finally:
            await read_models.close()
            await store.close()


@asynccontextmanager
async def read_models_on(
    backend: str, directory: Path, prefix: str
) -> AsyncIterator[ReadModelStore]:
    """A read-model store opened fresh on ``backend`` (a file in ``directory``, or a
    PostgreSQL schema named from ``prefix``), closed (the schema dropped) after."""
    read_models: ReadModelStore
    if backend == "sqlite":
        read_models = SqliteReadModelStore(directory / "read-models.db")
        try:
            yield read_models
        finally:
            await read_models.close()
        return
    from casetrail_platform.projections.postgres import PostgresReadModelStore

    async with schema_of_its_own(prefix) as schema:
        read_models = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
        try:
            yield read_models
        finally:
            await read_models.close()


@asynccontextmanager
async def older_snapshot(backend: str, directory: Path) -> AsyncIterator[None]:
    """Another session holding a snapshot of the read models, as a backup does."""
    if backend == "sqlite":
        reader = sqlite3.connect(directory / "read-models.db", isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM documents").fetchone()
            yield
        finally:
            reader.execute("ROLLBACK")
            reader.close()
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as older:
        await older.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await older.execute("SELECT 1")
        yield
        await older.execute("ROLLBACK")
