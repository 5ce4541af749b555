"""One switch of the servers, mode by mode (issues 9 and 11): every mode run in alternating
rounds, and the table that compares them."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from bench.common import fmt_rate, fmt_ratio
from bench.grpc_bench.loadgen import run_load
from bench.grpc_bench.plan import LoadSpec, Plan, RowSpec, progress
from bench.grpc_bench.results import RowResult
from bench.grpc_bench.servers import BENCH_TOKENS, Server, start_issuer, start_services
from bench.grpc_bench.storage import delete_topic, fresh_database
from bench.grpc_bench.tables import COMMAND_NAMES, ms
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, server_setting, servers_environment

MODE_ROUNDS = 2


RunMode = Callable[[Path, str, str], Awaitable[list[RowResult]]]
"""Runs the rows of one mode: (work directory, mode, run id) -> results."""


async def compare_modes(
    what: str, modes: Sequence[str], run_mode: RunMode, keep: bool
) -> tuple[dict[str, list[RowResult]], float]:
    """Every mode once per round, against an issuer started for the run, in ``MODE_ROUNDS``
    rounds, every other one in reverse order (so that a drifting machine favours none)."""
    run_id = f"{int(time.time())}"
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"casetrail-{what}-bench-"))
    issuer = start_issuer()
    results: dict[str, list[RowResult]] = {mode: [] for mode in modes}
    try:
        for round_number in range(MODE_ROUNDS):
            order = modes if round_number % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                progress(started, f"{what} {mode}, round {round_number + 1}")
                results[mode] += await run_mode(work, mode, f"{run_id}-{round_number}")
        elapsed = time.perf_counter() - started
    finally:
        issuer.stop()
        if keep:
            print(f"logs and data kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results, elapsed


SWITCHED_SERVER = {
    "embedded": {"open_case": "embedded", "get_case_view": "embedded"},
    "distributed": {"open_case": "intake", "get_case_view": "planning"},
}
"""The process whose CPU each command of the mode rows is charged to."""


async def switched_run(
    plan: Plan, work: Path, run_id: str, switch: str, mode: str, backend: str = "embedded"
) -> list[RowResult]:
    """OpenCase then GetCaseView, closed loop, against the four services started with the
    benchmark-only ``switch`` set to ``mode``; distributed: on a database and a topic of
    their own, dropped afterwards."""
    tag = f"{switch.removeprefix('--')}-{mode.replace('+', '-')}-{backend}-{run_id}"
    if backend == "embedded":
        return await _switched_load(plan, work, tag, backend, [switch, mode], dict(os.environ))
    from casetrail_platform.bus.kafka_settings import KafkaSettings

    environment = servers_environment(KAFKA_BOOTSTRAP)
    bootstrap = KafkaSettings.from_env(environment).bootstrap_servers
    topic = f"casetrail.bench-{tag}"
    base_dsn = server_setting(PG_DSN)
    with fresh_database(base_dsn, "bench_" + tag.replace("-", "_")) as dsn:
        env = {**environment, PG_DSN: dsn}
        try:
            return await _switched_load(plan, work, tag, backend, [switch, mode], env, dsn, topic)
        finally:
            await delete_topic(bootstrap, topic)


async def _switched_load(
    plan: Plan,
    work: Path,
    tag: str,
    backend: str,
    switches: Sequence[str],
    env: Mapping[str, str],
    dsn: str = "",
    topic: str = "",
) -> list[RowResult]:
    servers: list[Server] = []
    try:
        await start_services(servers, backend, switches, env, work, tag, topic)
        charged = SWITCHED_SERVER[backend]
        closed = RowSpec(
            f"{backend} {switches[-1]}",
            "open_case",
            "closed",
            plan.warmup,
            plan.seconds,
            plan.concurrency,
            server=charged["open_case"],
        )
        spec = LoadSpec(
            run_id=tag,
            addresses={name: a for s in servers for name, a in s.addresses.items()},
            pids={s.label: s.pid for s in servers},
            rows=[
                closed,
                replace(closed, command="get_case_view", server=charged["get_case_view"]),
            ],
            channels=plan.channels,
            clients=plan.clients,
            cases=plan.cases,
            scratch=str(work),
            settle_limit=plan.settle_limit,
            dsn=dsn,
            tokens=BENCH_TOKENS,
        )
        return await run_load(spec, work)
    finally:
        for server in reversed(servers):
            await server.stop()


def mode_headers(lead: Sequence[str], mode: str, base: str) -> list[str]:
    """The header of ``mode_table``'s rows: ``lead``'s columns, the command, the mode column
    named ``mode``, and the comparisons with mode ``base``."""
    return [
        *lead,
        "command",
        mode,
        "calls/s by round",
        "calls/s (mean)",
        f"vs {base}",
        "server CPU µs per call (mean)",
        f"vs {base}",
        "p50 ms",
        "p99 ms",
        "failed",
    ]


def mode_table(
    results: Mapping[str, Sequence[RowResult]],
    modes: Sequence[str],
    base: str,
    setup: str = "",
    lead: Sequence[str] = (),
) -> list[list[str]]:
    """Table rows, per command then mode, compared with mode ``base``: calls/s by round and
    their mean, server CPU µs per call, latencies, failures; of the rows whose setup starts
    with ``setup``. ``lead``: first cells of each."""
    table = []
    for command in ("open_case", "get_case_view"):
        base_rate, base_cpu = _auth_means(
            [r for r in results[base] if r.spec.setup.startswith(setup)], command
        )
        for mode in modes:
            chosen = [r for r in results[mode] if r.spec.setup.startswith(setup)]
            rows = [r for r in chosen if r.spec.command == command]
            rate, cpu = _auth_means(chosen, command)
            table.append(
                [
                    *lead,
                    COMMAND_NAMES[command],
                    mode,
                    " / ".join(fmt_rate(r.rate) for r in rows),
                    fmt_rate(rate),
                    fmt_ratio(rate / base_rate) if base_rate else "-",
                    f"{cpu:.0f}",
                    fmt_ratio(cpu / base_cpu) if base_cpu else "-",
                    " / ".join(ms(r.p50_ms) for r in rows),
                    " / ".join(ms(r.p99_ms) for r in rows),
                    str(sum(sum(r.errors.values()) for r in rows)),
                ]
            )
    return table


def _auth_means(rows: Sequence[RowResult], command: str) -> tuple[float, float]:
    """Mean calls/s and mean server CPU µs per call of ``command``'s rows."""
    chosen = [r for r in rows if r.spec.command == command]
    if not chosen:
        return 0.0, 0.0
    rate = sum(r.rate for r in chosen) / len(chosen)
    per_cpu = [r.per_cpu_second(r.spec.server) for r in chosen]
    micros = [1e6 / value for value in per_cpu if value]
    return rate, (sum(micros) / len(micros) if micros else 0.0)
