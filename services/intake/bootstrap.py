"""Composition of the intake service: storage, projections, bus subscription, gRPC server."""

from __future__ import annotations

import grpc

from casetrail.intake.v1 import intake_pb2_grpc
from events.hosting import Infrastructure, RunningService, host_for
from events.policy.guard import AccessControl
from events.policy.projection import CaseFactsProjection, CaseFactsReader
from services.intake.adapters.case_closures import CaseClosuresProjection, ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.entrypoints.grpc_server import SERVICE_NAME, IntakeDeps, IntakeServicer

SERVICE = "intake"


async def start(infra: Infrastructure, address: str = "127.0.0.1:0") -> RunningService:
    host = await host_for(infra, SERVICE)
    directory = ClientDirectory(host.store, host.read_models, host.locks)
    host.project_own_events(directory.projection)
    host.subscribe(CaseClosuresProjection())
    host.subscribe(CaseFactsProjection())
    access = AccessControl(host.store, CaseFactsReader(host.read_models), host.source)
    servicer = IntakeServicer(
        IntakeDeps(host.store, directory, ClosureLog(host.read_models), access)
    )

    def register(server: grpc.aio.Server) -> None:
        intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, server)

    return await host.start(address, [register], [SERVICE_NAME])
