from __future__ import annotations

import pytest

from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from events.registry import EventRegistry
from services.audit.adapters.timeline import ReadModelTimelines
from services.audit.app.queries import AuditDeps


@pytest.fixture
def registry() -> EventRegistry:
    return default_registry()


@pytest.fixture
def deps(
    store: SqliteEventStore, read_models: SqliteReadModelStore, registry: EventRegistry
) -> AuditDeps:
    return AuditDeps(
        timelines=ReadModelTimelines(read_models, registry),
        store=store,
        access=AccessControl(store, None, "casetrail/audit"),
    )
