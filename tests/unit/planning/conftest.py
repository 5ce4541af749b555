from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from services.planning.adapters.case_views import CaseViews
from services.planning.app.handlers import Dependencies
from tests.unit.planning.support import Bus


@pytest.fixture
async def bus(
    tmp_path: Path, read_models: SqliteReadModelStore, store: SqliteEventStore
) -> AsyncIterator[Bus]:
    feed = Bus(tmp_path, read_models, store)
    yield feed
    await feed.close()


@pytest.fixture
def deps(store: SqliteEventStore, read_models: SqliteReadModelStore) -> Dependencies:
    return Dependencies(store, CaseViews(read_models))
