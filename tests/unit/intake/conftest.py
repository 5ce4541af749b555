from __future__ import annotations

import pytest

from events.projections.runner import BusProjectionHandler
from events.projections.sqlite import SqliteReadModelStore
from events.store.sqlite import SqliteEventStore
from services.intake.adapters.case_closures import CaseClosuresProjection, ClosureLog
from services.intake.adapters.client_directory import ClientDirectory


@pytest.fixture
def directory(store: SqliteEventStore, read_models: SqliteReadModelStore) -> ClientDirectory:
    return ClientDirectory(store, read_models)


@pytest.fixture
def closures(read_models: SqliteReadModelStore) -> ClosureLog:
    return ClosureLog(read_models)


@pytest.fixture
def from_bus(read_models: SqliteReadModelStore) -> BusProjectionHandler:
    """Feeds the closures projection as the host's bus subscription does."""
    return BusProjectionHandler(read_models, CaseClosuresProjection())
