"""Composition of the planning service: its store, the case view fed from the bus, its API."""

from __future__ import annotations

import grpc

from casetrail.planning.v1 import planning_pb2_grpc
from casetrail_platform.hosting import Infrastructure, RunningService, host_for
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.projection import CaseFactsProjection, CaseFactsReader
from services.planning.adapters.case_views import CaseViewProjection, CaseViews
from services.planning.adapters.staff import StaffProjection
from services.planning.app.handlers import SERVICE, Dependencies
from services.planning.entrypoints.grpc_server import SERVICE_NAME, PlanningServicer


async def start(infra: Infrastructure, address: str = "127.0.0.1:0") -> RunningService:
    host = await host_for(infra, SERVICE)
    host.subscribe(CaseViewProjection())
    host.subscribe(StaffProjection())
    facts = CaseFactsProjection()
    host.subscribe(facts)
    access = AccessControl(
        host.store,
        CaseFactsReader(host.read_models),
        host.source,
        # A supervisor's CloseCase/ReopenCase waits for the facts to hold every transfer
        # coordination acknowledged before it (README, "A transfer not delivered yet").
        facts_caught_up=host.caught_up(facts),
    )
    servicer = PlanningServicer(Dependencies(host.store, CaseViews(host.read_models)), access)

    def register(server: grpc.aio.Server) -> None:
        planning_pb2_grpc.add_PlanningServiceServicer_to_server(servicer, server)

    return await host.start(address, [register], [SERVICE_NAME])
