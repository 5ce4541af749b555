"""Fixtures every service's unit tests share: a real SQLite event store and read-model store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db", default_registry())
    yield opened
    await opened.close()


@pytest.fixture
async def read_models(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    opened = SqliteReadModelStore(tmp_path / "read-models.db")
    yield opened
    await opened.close()
