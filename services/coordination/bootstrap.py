"""Composition of the coordination service: agency configuration, storage, projections (own
assignments; intake's case facts from the bus) and the gRPC API."""

from __future__ import annotations

import grpc

from casetrail.coordination.v1 import coordination_pb2_grpc
from casetrail_platform.hosting import RunningService, host_for
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.projection import CaseFactsProjection as PolicyFactsProjection
from casetrail_platform.policy.projection import CaseFactsReader, retire_old_facts_layout
from services.coordination.adapters.agency_file import (
    FILE_NAME,
    load_agency,
    require_home_agency,
)
from services.coordination.adapters.projections import (
    AssignmentsProjection,
    CaseFactsProjection,
    retire_old_layout,
)
from services.coordination.app.follow_ups import FollowUps
from services.coordination.app.handlers.running import SERVICE, Dependencies
from services.coordination.entrypoints.grpc_server import SERVICE_NAME, CoordinationServicer


async def start(infra: Infrastructure, address: str = "127.0.0.1:0") -> RunningService:
    # Read before any storage is opened: a bad agency.json stops the start with nothing to undo.
    agency_file = infra.service_dir(SERVICE) / FILE_NAME
    agency = load_agency(agency_file)
    require_home_agency(agency, infra.home_agency, agency_file)
    host = await host_for(infra, SERVICE)
    await retire_old_facts_layout(host.read_models)
    await retire_old_layout(host.read_models)
    host.project_own_events(AssignmentsProjection())
    case_facts = CaseFactsProjection()
    host.subscribe(case_facts)
    policy = PolicyFactsProjection()
    host.subscribe(policy)
    policy_facts = CaseFactsReader(host.read_models)
    # Coordination's own transfers come back to its policy facts through the bus: a read by
    # the worker a case left waits for them (``AccessControl.reader_facts``).
    access = AccessControl(
        host.store,
        policy_facts,
        host.source,
        home_agency=infra.home_agency,
        case_facts_caught_up=host.caught_up(policy, frozenset(policy.event_types)),
    )
    deps = Dependencies(
        host.store,
        host.read_models,
        agency,
        host.locks,
        infra.time_zone,
        published=host.published,
        case_facts_caught_up=host.caught_up(case_facts, frozenset(case_facts.event_types)),
    )
    # Closures and cancellations, once the case facts hold them: cancels what a closed case
    # still has scheduled and releases its reservations (app.follow_ups).
    host.subscribe_handler(
        FollowUps.name, FollowUps(deps), event_types=FollowUps.event_types, ordered=True
    )
    servicer = CoordinationServicer(deps, access)

    def register(server: grpc.aio.Server) -> None:
        coordination_pb2_grpc.add_CoordinationServiceServicer_to_server(servicer, server)

    return await host.start(address, [register], [SERVICE_NAME])
