from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Protocol

import psycopg
import pytest

from casetrail_platform.keys.fields import FieldProtection
from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import DataKeyTable
from casetrail_platform.keys.postgres import PostgresDataKeyTable
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.registry import EventRegistry
from tests.support.backends import read_models_on
from tests.support.sample_events import sample_registry
from tests.support.servers import postgres_dsn, schema_of_its_own


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
    async with contextlib.AsyncExitStack() as schema:
        if request.param == "sqlite":

            async def open_one(with_registry: EventRegistry | None = None) -> EventStore:
                path = tmp_path / "events.db"
                store = await SqliteEventStore.open(path, with_registry or registry)
                opened.append(store)
                return store

        else:
            from casetrail_platform.store.postgres import PostgresEventStore

            name = await schema.enter_async_context(schema_of_its_own("contract"))

            async def open_one(with_registry: EventRegistry | None = None) -> EventStore:
                chosen = with_registry or registry
                store = await PostgresEventStore.connect(postgres_dsn(), chosen, schema=name)
                opened.append(store)
                return store

        yield open_one
        for store in opened:  # before the schema is dropped
            await store.close()


@pytest.fixture
async def event_store(open_store: StoreOpener) -> EventStore:
    return await open_store()


@pytest.fixture(params=["sqlite", "postgres"])
async def read_models(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ReadModelStore]:
    """A fresh read-model store on each backend."""
    async with read_models_on(request.param, tmp_path, "readmodels") as store:
        yield store


@pytest.fixture
async def sealed(
    open_store: StoreOpener, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, EventRegistry, DataKeyTable]]:
    """A store on each backend that seals sensitive fields under client keys (a data-key table
    of its own), its registry and that table."""
    probe = await open_store()
    table: DataKeyTable
    schema = f"keys_{uuid.uuid4().hex[:12]}"
    if isinstance(probe, SqliteEventStore):
        table = SqliteDataKeyTable(tmp_path / "keys" / "keys.db")
    else:
        table = PostgresDataKeyTable(postgres_dsn(), schema=schema)
    keyring = ClientKeyring(FileKeyEncryptionKey(tmp_path / "keys" / KEK_FILE_NAME), table)
    registry = sample_registry().protected(FieldProtection(keyring))
    yield await open_store(registry), registry, table
    table.close()
    if not isinstance(probe, SqliteEventStore):
        with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
