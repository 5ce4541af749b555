"""Composition of the planning service: its store, the case view fed from the bus, its API."""

from __future__ import annotations

import grpc

from casetrail.planning.v1 import planning_pb2_grpc
from casetrail_platform.hosting import RunningService, host_for
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.policy.hosting import facts_access_control
from casetrail_platform.policy.projection import retire_old_facts_layout
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.cases import CaseReopened
from services.planning.adapters.case_views import (
    CaseViewProjection,
    CaseViews,
    retire_old_layout,
)
from services.planning.adapters.staff import StaffProjection
from services.planning.app.handlers import SERVICE, Dependencies
from services.planning.entrypoints.grpc_server import SERVICE_NAME, PlanningServicer


async def start(infra: Infrastructure, address: str = "127.0.0.1:0") -> RunningService:
    host = await host_for(infra, SERVICE)
    await retire_old_layout(host.read_models)
    await retire_old_facts_layout(host.read_models)
    views = CaseViewProjection(infra.time_zone)
    host.subscribe(views)
    host.subscribe(StaffProjection())
    access = facts_access_control(host)
    # An assigned worker's command waits for the view to hold every transfer and reopening
    # answered before (a reopened case takes a new plan): only those, not planning's own events
    # coming back.
    answered_elsewhere = frozenset(
        {CaseAssigned.event_type, CaseReassigned.event_type, CaseReopened.event_type}
    )
    deps = Dependencies(
        host.store,
        CaseViews(host.read_models),
        host.caught_up(views, answered_elsewhere),
        published=host.published,
    )
    servicer = PlanningServicer(deps, access, time_zone=infra.time_zone)

    def register(server: grpc.aio.Server) -> None:
        planning_pb2_grpc.add_PlanningServiceServicer_to_server(servicer, server)

    return await host.start(address, [register], [SERVICE_NAME])
