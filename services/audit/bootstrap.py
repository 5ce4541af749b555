"""Composition of the audit service: its stores, the timeline projection and the gRPC API."""

from __future__ import annotations

import grpc

from casetrail.audit.v1 import audit_pb2_grpc
from events.hosting import Infrastructure, RunningService, host_for
from services.audit.adapters.timeline import ReadModelTimelines, TimelineProjection
from services.audit.app.handlers import SERVICE
from services.audit.app.queries import AuditDeps
from services.audit.entrypoints.grpc_server import SERVICE_NAME, AuditServicer


async def start(infra: Infrastructure, address: str = "127.0.0.1:0") -> RunningService:
    host = await host_for(infra, SERVICE)
    timeline = TimelineProjection()
    # Every service's case events arrive on the bus; audit's own accesses are also projected
    # straight from its store so they show in the timeline without a round trip through the
    # bus. The projection ignores whichever copy comes second.
    host.subscribe(timeline)
    host.project_own_events(timeline)
    servicer = AuditServicer(
        AuditDeps(timelines=ReadModelTimelines(host.read_models, infra.registry), store=host.store)
    )

    def register(server: grpc.aio.Server) -> None:
        audit_pb2_grpc.add_AuditServicer_to_server(servicer, server)

    return await host.start(address, [register], [SERVICE_NAME])
