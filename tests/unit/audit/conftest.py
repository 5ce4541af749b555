from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from casetrail.audit.v1 import audit_pb2_grpc
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from events.registry import EventRegistry
from services.audit.adapters.timeline import ReadModelTimelines
from services.audit.app.queries import AuditDeps
from services.audit.entrypoints.grpc_server import AuditServicer
from tests.support.identity import TestIssuer
from tests.unit.audit.serving import audit_server


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
        access=AccessControl(store, None, "casetrail/audit", home_agency=DEFAULT_HOME_AGENCY),
    )


@pytest.fixture
async def audit(
    deps: AuditDeps, issuer: TestIssuer
) -> AsyncIterator[audit_pb2_grpc.AuditServiceAsyncStub]:
    async with audit_server(AuditServicer(deps), issuer) as stub:
        yield stub
