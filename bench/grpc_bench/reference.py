"""The reference rows (``--serve-empty``): intake's gRPC server set-up with handlers that answer
constants, the ceiling of any Python gRPC service process measured this way."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

from typing_extensions import override

from bench.grpc_bench.loadgen import run_load
from bench.grpc_bench.plan import LoadSpec, Plan, RowSpec
from bench.grpc_bench.results import RowResult
from bench.grpc_bench.servers import BENCH_TOKENS, start_server
from bench.grpc_bench.switches import verifier
from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc

# Plausible ids (UUIDv7-shaped, as the services create), so the answers are as large as real ones.
EMPTY_CASE_ID = "01920000-0000-7000-8000-00000000ca5e"


EMPTY_CLIENT_ID = "01920000-0000-7000-8000-00000000c1e7"


EMPTY_EVENT_ID = "01920000-0000-7000-8000-0000000e7e47"


def serve_empty_entry() -> None:
    """(internal) Serve the empty intake until SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_empty())


async def serve_empty() -> None:
    """Intake's gRPC server as the services build it (health, reflection, the refusal
    wrapper), with handlers that answer constants: what gRPC, asyncio and the load generator
    cost on this machine without any of casetrail's work. Coordination's address points here
    too, since the load generator opens channels to both (and calls only intake here)."""
    from casetrail_platform.grpc_platform.server import create_server, serve_until_signalled
    from services.runner import tune_gc

    servicer = empty_intake()
    names = [intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name]
    server, port, health_servicer = await create_server(
        "127.0.0.1:0",
        [partial(intake_pb2_grpc.add_IntakeServiceServicer_to_server, servicer)],
        names,
        verifier=verifier(),
    )
    await server.start()
    tune_gc()  # as services.runner does after start-up: like for like
    address = f"127.0.0.1:{port}"
    print("ADDRESSES " + json.dumps({"intake": address, "coordination": address}), flush=True)
    await serve_until_signalled(server, health_servicer)


def empty_intake() -> intake_pb2_grpc.IntakeServiceServicer:
    """An Intake servicer whose OpenCase and RegisterClient return a constant answer.

    Built in a function so that the orchestrator and the load generator, which never serve,
    do not import the events package (the catalog's pydantic models take a while to load)."""
    from casetrail_platform.grpc_platform.server import Context, refusals_as_status

    opened = intake_pb2.OpenCaseResponse(
        result=common_pb2.CommandResult(
            case_id=EMPTY_CASE_ID, version=1, event_ids=[EMPTY_EVENT_ID]
        )
    )
    registered = intake_pb2.RegisterClientResponse(
        client_id=EMPTY_CLIENT_ID, version=1, event_ids=[EMPTY_EVENT_ID]
    )

    class EmptyIntake(intake_pb2_grpc.IntakeServiceServicer):
        @override
        @refusals_as_status
        async def RegisterClient(
            self, request: intake_pb2.RegisterClientRequest, context: Context
        ) -> intake_pb2.RegisterClientResponse:
            return registered

        @override
        @refusals_as_status
        async def OpenCase(
            self, request: intake_pb2.OpenCaseRequest, context: Context
        ) -> intake_pb2.OpenCaseResponse:
            return opened

    # The stubs declare every method abstract; the generated base class answers the other
    # methods UNIMPLEMENTED, which is all the reference needs.
    return EmptyIntake()  # type: ignore[abstract]


async def reference_run(plan: Plan, work: Path, run_id: str) -> list[RowResult]:
    """The OpenCase closed-loop row against the empty handler, with the same load generator
    settings as the services' rows."""
    argv = ["-m", "bench.grpc_bench", "--serve-empty"]
    server = await start_server("reference", argv, os.environ, work / "reference.out", ["intake"])
    try:
        closed = RowSpec(
            "reference", "open_case", "closed", plan.warmup, plan.seconds, plan.concurrency
        )
        spec = LoadSpec(
            run_id=f"{run_id}-r",
            addresses=server.addresses,
            pids={"reference": server.pid},
            rows=[replace(closed, server="reference")],
            channels=plan.channels,
            clients=plan.clients,
            cases=0,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            tokens=BENCH_TOKENS,
        )
        return await run_load(spec, work)
    finally:
        await server.stop()
