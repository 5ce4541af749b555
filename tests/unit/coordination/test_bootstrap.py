"""The coordination service as ``make run`` starts it: agency.json, embedded store, in-process
bus (intake's facts in, coordination's events out), gRPC with health."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail.coordination.v1 import coordination_pb2_grpc
from casetrail_platform.commands import CommandContext
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.cases import CaseOpened, PresentingNeed, ReferralSource, ReferralSourceKind
from events.catalog.values import NeedCategory
from events.catalog_registry import default_registry
from events.envelope import Actor
from services.coordination.adapters.agency_file import AgencyConfigError
from services.coordination.adapters.example_agency import example_agency
from services.coordination.bootstrap import start
from services.coordination.entrypoints.grpc_server import SERVICE_NAME
from tests.support.identity import TestIssuer, caller_channel
from tests.support.waiting import eventually
from tests.unit.coordination.support import OPENED, command_context, query_context


async def test_coordination_learns_cases_from_the_bus_and_publishes_its_own(
    tmp_path: Path,
    issuer: TestIssuer,
) -> None:
    infra = Infrastructure.embedded(tmp_path / "data", verifier=issuer.verifier())
    bus = infra.inprocess_bus
    assert bus is not None
    service = await start(infra)
    intake = await SqliteEventStore.open(tmp_path / "intake.db", default_registry())
    channel = caller_channel(grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"), issuer)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        served = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert served.status == health_pb2.HealthCheckResponse.SERVING

        stub = coordination_pb2_grpc.CoordinationServiceStub(channel)
        request = pb.AssignCaseRequest(
            context=command_context("coordinator", "assign-walter"),
            case_id="walter-1",
            worker_id="sw-amara-okafor",
        )
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.AssignCase(request)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND

        # What intake would publish through its outbox relay.
        opened = CaseOpened(
            case_id="walter-1",
            client_id="walter",
            referral_source=ReferralSource(kind=ReferralSourceKind.HOSPITAL),
            presenting_needs=(
                PresentingNeed(category=NeedCategory.HOME_CARE),
                PresentingNeed(category=NeedCategory.COUNSELING),
            ),
        )
        # Opened a day before the moment the assignment states (support.command_context).
        context = CommandContext(Actor("intake-1", Role.INTAKE_WORKER), "open", occurred_at=OPENED)
        recorded = await intake.append(
            "case-walter-1", context.new_events("casetrail/intake", [opened]), 0
        )
        await bus.publisher(infra.topic).publish(recorded)

        async def assigned() -> pb.AssignCaseResponse | None:
            try:
                response: pb.AssignCaseResponse = await stub.AssignCase(request)
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
                return None
            return response

        # The built-in example agency (no agency.json): its LCSW may take counseling.
        response = await eventually(assigned, "walter-1 known to coordination")
        assert list(response.matched_needs) == ["home_care", "counseling"]

        def published() -> list[str]:
            return [
                dict(message.headers).get("ce_type", b"").decode()
                for message in bus.messages(infra.topic)
            ]

        async def assignment_on_bus() -> bool | None:
            return True if "casetrail.case.assigned" in published() else None

        await eventually(assignment_on_bus, "the assignment published by the outbox relay")
    finally:
        await channel.close()
        await intake.close()
        await service.stop()

    # Restarted on the same data: the caseload and intake's facts were kept.
    service = await start(infra)
    try:
        async with caller_channel(
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"), issuer
        ) as channel:
            stub = coordination_pb2_grpc.CoordinationServiceStub(channel)
            workers = await stub.ListWorkers(pb.ListWorkersRequest(context=query_context()))
            loads = {worker.worker_id: worker.caseload for worker in workers.workers}
            assert loads["sw-amara-okafor"] == 1
            view = await stub.GetCaseCoordination(
                pb.GetCaseCoordinationRequest(context=query_context(), case_id="walter-1")
            )
            assert view.worker_id == "sw-amara-okafor"
    finally:
        await service.stop()


async def test_the_agency_comes_from_agency_json(tmp_path: Path, issuer: TestIssuer) -> None:
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    config = example_agency().model_dump(mode="json")
    config["workers"] = config["workers"][:1]
    (infra.service_dir("coordination") / "agency.json").write_text(json.dumps(config))
    service = await start(infra)
    try:
        async with caller_channel(
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"), issuer
        ) as channel:
            stub = coordination_pb2_grpc.CoordinationServiceStub(channel)
            workers = await stub.ListWorkers(pb.ListWorkersRequest(context=query_context()))
            assert [w.worker_id for w in workers.workers] == ["sw-amara-okafor"]
    finally:
        await service.stop()


async def test_a_bad_agency_json_stops_the_start(tmp_path: Path, issuer: TestIssuer) -> None:
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    config = example_agency().model_dump(mode="json")
    config["workers"][0]["caseload_capacity"] = -1
    (infra.service_dir("coordination") / "agency.json").write_text(json.dumps(config))
    with pytest.raises(AgencyConfigError, match=r"workers\.0\.caseload_capacity"):
        await start(infra)
    assert not (tmp_path / "coordination" / "events.db").exists()
