"""Composition of the audit service: its stores, the timeline projection and the gRPC API."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2

from casetrail.audit.v1 import audit_pb2_grpc
from casetrail_platform.hosting import RunningService, host_for
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.directory import LedgerDirectory
from casetrail_platform.ledger.witness import Witness
from casetrail_platform.policy.facts import FACT_EVENT_TYPES
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.telemetry.metrics import process_metrics
from services.audit.adapters.client_cases import ClientCasesProjection, ReadModelClientCases
from services.audit.adapters.disclosure_index import (
    DisclosureIndexProjection,
    ReadModelDisclosureIndex,
)
from services.audit.adapters.timeline import (
    ClientTrailProjection,
    ReadModelTimelines,
    TimelineProjection,
    retire_old_layout,
)
from services.audit.app.handlers import SERVICE
from services.audit.app.ledger import LedgerDeps, run_witness
from services.audit.app.queries import AuditDeps
from services.audit.entrypoints.grpc_server import SERVICE_NAME, AuditServicer

WITNESS_HEALTH = "casetrail.audit.ledger-witness"
"""NOT_SERVING while audit holds some service's log inconsistent with its checkpoints."""


async def start(infra: Infrastructure, address: str = "127.0.0.1:0") -> RunningService:
    host = await host_for(infra, SERVICE)
    await retire_old_layout(host.read_models)
    timeline = TimelineProjection()
    # Every service's case events arrive on the bus; audit's own accesses are also projected
    # straight from its store so they show in the timeline without a round trip through the
    # bus. The projection ignores whichever copy comes second.
    host.subscribe(timeline)
    host.project_own_events(timeline)
    # The clients' own events, which each of their cases shows (on the bus only: audit
    # records none).
    host.subscribe(ClientTrailProjection())
    # Which cases each client has, and each case's disclosures, for the accounting of
    # disclosures (asked per client); audit's own reads (an export for a court) count too.
    host.subscribe(ClientCasesProjection())
    # The policy's facts are folded from the timeline's copy of each case's history: a read
    # whose right an event can end waits for that copy (``AccessControl.wait_for_facts``).
    access = AccessControl(
        host.store,
        None,
        host.source,
        home_agency=infra.home_agency,
        case_facts_caught_up=host.caught_up(timeline, FACT_EVENT_TYPES),
    )
    disclosure_index = DisclosureIndexProjection(access.home_agency)
    host.subscribe(disclosure_index)
    host.project_own_events(disclosure_index)
    timelines = ReadModelTimelines(host.read_models, infra.registry)
    directory = LedgerDirectory(infra)
    host.close_with(directory.close)
    ledger_deps = LedgerDeps(
        directory=directory,
        witness=Witness(host.read_models),
        store=host.store,
        find_event=timelines.event,
        # An export signs audit's own log on demand: its access records then carry proofs.
        sign_own=host.ledger.sign,
        sign_every=infra.ledger_sign_every,
        # Its statements of an export's pending events are signed with the same key.
        sign_note=host.ledger.signer.sign_note,
    )
    servicer = AuditServicer(
        AuditDeps(timelines=timelines, store=host.store, access=access),
        ledger_deps,
        ReadModelClientCases(host.read_models),
        ReadModelDisclosureIndex(host.read_models, infra.registry),
    )

    async def witness(stop: asyncio.Event, health_servicer: health.aio.HealthServicer) -> None:
        async def set_health(consistent: bool) -> None:
            serving = health_pb2.HealthCheckResponse.SERVING
            status = serving if consistent else health_pb2.HealthCheckResponse.NOT_SERVING
            await health_servicer.set(WITNESS_HEALTH, status)
            process_metrics().ledger_witness_consistent.set(1 if consistent else 0)

        every = max(0.2, infra.ledger_sign_every / 2)
        await run_witness(ledger_deps, set_health, stop, every)

    host.run_alongside(witness)

    def register(server: grpc.aio.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)

    return await host.start(address, [register], [SERVICE_NAME])
