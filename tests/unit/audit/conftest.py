from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.catalog_registry import default_registry
from events.projections.sqlite import SqliteReadModelStore
from events.registry import EventRegistry
from events.store.sqlite import SqliteEventStore
from services.audit.adapters.timeline import ReadModelTimelines
from services.audit.app.queries import AuditDeps


@pytest.fixture
def registry() -> EventRegistry:
    return default_registry()


@pytest.fixture
async def store(tmp_path: Path, registry: EventRegistry) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "audit-events.db", registry)
    yield opened
    await opened.close()


@pytest.fixture
async def read_models(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    opened = SqliteReadModelStore(tmp_path / "audit-read-models.db")
    yield opened
    await opened.close()


@pytest.fixture
def deps(
    store: SqliteEventStore, read_models: SqliteReadModelStore, registry: EventRegistry
) -> AuditDeps:
    return AuditDeps(timelines=ReadModelTimelines(read_models, registry), store=store)
