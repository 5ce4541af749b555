from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import pytest

from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.registry import EventRegistry
from tests.support.sample_events import sample_registry
from tests.support.servers import postgres_dsn, server_missing


class StoreOpener(Protocol):
    def __call__(self, with_registry: EventRegistry | None = None) -> Awaitable[EventStore]: ...


@pytest.fixture
def registry() -> EventRegistry:
    return sample_registry()


@pytest.fixture(params=["sqlite", "postgres"])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, registry: EventRegistry
) -> AsyncIterator[StoreOpener]:
    """Opens stores on one fresh backend; every store opened sees the same data."""
    opened: list[EventStore] = []
    cleanups: list[Callable[[], Awaitable[None]]] = []

    if request.param == "sqlite":

        async def open_one(with_registry: EventRegistry | None = None) -> EventStore:
            store = await SqliteEventStore.open(tmp_path / "events.db", with_registry or registry)
            opened.append(store)
            return store

    else:
        import psycopg

        from casetrail_platform.store.postgres import PostgresEventStore

        schema = f"contract_{uuid.uuid4().hex[:12]}"
        dsn = postgres_dsn()
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                await admin.execute(f'CREATE SCHEMA "{schema}"')
        except psycopg.OperationalError as error:
            server_missing("PostgreSQL", error)

        async def drop_schema() -> None:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')

        cleanups.append(drop_schema)

        async def open_one(with_registry: EventRegistry | None = None) -> EventStore:
            store = await PostgresEventStore.connect(dsn, with_registry or registry, schema=schema)
            opened.append(store)
            return store

    yield open_one
    for store in opened:
        await store.close()
    for cleanup in cleanups:
        await cleanup()


@pytest.fixture
async def event_store(open_store: StoreOpener) -> EventStore:
    return await open_store()


@pytest.fixture(params=["sqlite", "postgres"])
async def read_models(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ReadModelStore]:
    """A fresh read-model store on each backend."""
    if request.param == "sqlite":
        store: ReadModelStore = SqliteReadModelStore(tmp_path / "read-models.db")
        yield store
        await store.close()
        return
    import psycopg

    from casetrail_platform.projections.postgres import PostgresReadModelStore

    schema = f"readmodels_{uuid.uuid4().hex[:12]}"
    try:
        async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as admin:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    store = await PostgresReadModelStore.connect(postgres_dsn(), schema=schema)
    yield store
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as admin:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
