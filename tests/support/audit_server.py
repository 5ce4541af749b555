"""Audit's real servicer on a real grpc.aio server (port 0) over SQLite stores, for tests of
its clients that need no other service (the caseload views record their reads there)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from casetrail.audit.v1 import audit_pb2_grpc
from casetrail_platform.grpc_platform.server import create_server
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from services.audit.adapters.timeline import ReadModelTimelines
from services.audit.app.queries import AuditDeps
from services.audit.entrypoints.grpc_server import SERVICE_NAME, AuditServicer
from tests.support.identity import TestIssuer


@dataclass(frozen=True)
class RunningAudit:
    address: str
    store: SqliteEventStore
    """Audit's own store: where the accesses it records are."""
    server: grpc.aio.Server


@asynccontextmanager
async def audit_server(directory: Path, issuer: TestIssuer) -> AsyncIterator[RunningAudit]:
    """Audit serving on 127.0.0.1, trusting ``issuer``, its stores in ``directory``."""
    registry = default_registry()
    store = await SqliteEventStore.open(directory / "audit-events.db", registry)
    read_models = SqliteReadModelStore(directory / "audit-read-models.db")
    deps = AuditDeps(
        timelines=ReadModelTimelines(read_models, registry),
        store=store,
        access=AccessControl(store, None, "casetrail/audit", home_agency=DEFAULT_HOME_AGENCY),
    )
    servicer = AuditServicer(deps)

    def register(server: grpc.aio.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)

    server, port, _ = await create_server(
        "127.0.0.1:0", [register], [SERVICE_NAME], verifier=issuer.verifier()
    )
    await server.start()
    try:
        yield RunningAudit(f"127.0.0.1:{port}", store, server)
    finally:
        await server.stop(None)
        await read_models.close()
        await store.close()
