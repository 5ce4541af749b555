"""The embedded rows: the four services in one process (SQLite, in-process bus), and the same
under cProfile."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from bench.grpc_bench.loadgen import run_load
from bench.grpc_bench.plan import SERVICES, LoadSpec, Plan, profile_row, rows
from bench.grpc_bench.results import Profile, RowResult, read_profile
from bench.grpc_bench.servers import BENCH_TOKENS, start_server


async def embedded_run(plan: Plan, work: Path, run_id: str) -> list[RowResult]:
    data = work / "embedded"
    data.mkdir()
    argv = ["-m", "services.runner", "--any-port", "--data-dir", str(data)]
    server = await start_server("embedded", argv, os.environ, work / "embedded.out", SERVICES)
    try:
        spec = LoadSpec(
            run_id=f"{run_id}-e",
            addresses=server.addresses,
            pids={"embedded": server.pid},
            rows=rows(plan, "embedded", "embedded", "embedded", register=True),
            channels=plan.channels,
            clients=plan.clients,
            cases=plan.cases,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            tokens=BENCH_TOKENS,
        )
        return await run_load(spec, work)
    finally:
        await server.stop()


async def embedded_profile(plan: Plan, work: Path, run_id: str) -> Profile | None:
    """The embedded services again, in a process like ``services.runner``'s that can profile
    its event loop's thread on signal, under OpenCase."""
    data = work / "embedded-profiled"
    data.mkdir()
    out = work / "embedded.pstats"
    argv = ["-m", "bench.grpc_bench", "--serve", "--data-dir", str(data), "--profile", str(out)]
    server = await start_server("embedded", argv, os.environ, work / "profiled.out", SERVICES)
    try:
        spec = LoadSpec(
            run_id=f"{run_id}-p",
            addresses=server.addresses,
            pids={"embedded": server.pid},
            rows=[replace(profile_row(plan, "embedded", "embedded"), warmup=plan.warmup)],
            channels=plan.channels,
            clients=plan.clients,
            cases=0,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            tokens=BENCH_TOKENS,
        )
        results = await run_load(spec, work)
    finally:
        await server.stop()
    return read_profile(results, out, "embedded (all four services in one process)")
