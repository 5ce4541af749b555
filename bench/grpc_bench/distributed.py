"""The distributed rows: one process per service on PostgreSQL and Kafka."""

from __future__ import annotations

from pathlib import Path

from bench.grpc_bench.loadgen import run_load
from bench.grpc_bench.plan import LoadSpec, Plan, profile_row, rows
from bench.grpc_bench.results import Profile, RowResult, read_profile
from bench.grpc_bench.servers import BENCH_TOKENS, Server, start_services
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, servers_environment


async def distributed_run(
    plan: Plan, work: Path, run_id: str, dsn: str, topic: str, profile: bool
) -> tuple[list[RowResult], Profile | None]:
    """The four services in four processes; with ``profile``, a last OpenCase row with the
    intake process's profiler on."""
    env = {**servers_environment(KAFKA_BOOTSTRAP), PG_DSN: dsn}
    out = work / "intake.pstats"
    servers: list[Server] = []
    try:
        await start_services(
            servers, "distributed", [], env, work, "distributed", topic, out if profile else None
        )
        specs = rows(plan, "distributed", "intake", "coordination", register=False)
        if profile:
            specs.append(profile_row(plan, "distributed", "intake"))
        spec = LoadSpec(
            run_id=f"{run_id}-d",
            addresses={name: a for s in servers for name, a in s.addresses.items()},
            pids={s.label: s.pid for s in servers},
            rows=specs,
            channels=plan.channels,
            clients=plan.clients,
            cases=plan.cases,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            dsn=dsn,
            tokens=BENCH_TOKENS,
        )
        results = await run_load(spec, work)
    finally:
        for server in reversed(servers):
            await server.stop()
    return results, read_profile(results, out, "distributed intake process")
