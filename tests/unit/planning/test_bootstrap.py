"""The planning service as ``make run`` starts it: embedded store, in-process bus, gRPC."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.commands import CommandContext
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog_registry import default_registry
from services.planning.bootstrap import start
from services.planning.entrypoints.grpc_server import SERVICE_NAME
from tests.support.identity import TestIssuer, acting, caller_channel
from tests.support.waiting import eventually
from tests.unit.planning.support import (
    COORDINATION,
    COORDINATOR,
    INTAKE,
    INTAKE_WORKER,
    assessed,
    assigned,
    case_opened,
)


async def test_planning_learns_cases_from_the_bus_and_serves_its_api(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    infra = Infrastructure.embedded(tmp_path / "data", verifier=issuer.verifier())
    assert infra.inprocess_bus is not None
    service = await start(infra)
    intake = await SqliteEventStore.open(tmp_path / "intake.db", default_registry())
    coordination = await SqliteEventStore.open(tmp_path / "coordination.db", default_registry())
    channel = caller_channel(grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"), issuer)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        served = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert served.status == health_pb2.HealthCheckResponse.SERVING

        # What intake and coordination would publish through their outbox relays.
        context = CommandContext(INTAKE_WORKER, "open")
        opened = await intake.append(
            "case-1", context.new_events(INTAKE, [case_opened("case-1"), assessed("case-1")]), 0
        )
        context = CommandContext(COORDINATOR, "assign")
        assignment = await coordination.append(
            "case-1", context.new_events(COORDINATION, [assigned("case-1")]), 0
        )
        await infra.inprocess_bus.publisher(infra.topic).publish([*opened, *assignment])

        stub = planning_pb2_grpc.PlanningServiceStub(channel)
        viewer = acting(
            Person("coord-1", "coordinator"), common_pb2.QueryContext(purpose="coordination")
        )

        async def assigned_view() -> planning_pb2.GetCaseViewResponse | None:
            try:
                view = await stub.GetCaseView(
                    planning_pb2.GetCaseViewRequest(context=viewer, case_id="case-1")
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
                return None
            return view if view.worker.worker_id else None

        await eventually(assigned_view, "case-1 opened and assigned in the view")

        drafted = await stub.DraftPlan(
            planning_pb2.DraftPlanRequest(
                context=acting(
                    Person("worker-ana", "social_worker"),
                    common_pb2.CommandContext(idempotency_key="draft"),
                ),
                case_id="case-1",
                goals=[
                    planning_pb2.Goal(
                        statement="Walk to the shop", term="short", need_category="home_care"
                    )
                ],
            )
        )

        async def planned_view() -> planning_pb2.GetCaseViewResponse | None:
            view = await assigned_view()
            return view if view is not None and view.HasField("plan") else None

        # Planning's own events come back to it over the bus.
        view = await eventually(planned_view, "the drafted plan in the view")
        assert view.plan.plan_id == drafted.plan_id
        assert view.stage == "planning"
    finally:
        await channel.close()
        await intake.close()
        await coordination.close()
        await service.stop()
