"""The report of the default run: setup, tables and side-by-side comparisons."""

from __future__ import annotations

import grpc

from bench.common import fmt_rate, fmt_ratio, machine_info, now_utc
from bench.grpc_bench.plan import SERVICES
from bench.grpc_bench.results import BenchRun
from bench.grpc_bench.shortfall import shortfall
from bench.grpc_bench.tables import (
    COMMAND_NAMES,
    cpu_split_table,
    find,
    main_table,
    micros_per_command,
    ms,
    waits_table,
)


def report(result: BenchRun) -> str:
    plan = result.plan
    info = machine_info(grpcio=grpc.__version__, **result.facts)
    lines = [
        f"Run: {now_utc()}, {'quick' if result.quick else 'full'} run, "
        f"{result.elapsed:.0f} s. Command: `python -m bench.grpc_bench"
        f"{' --quick' if result.quick else ''}`.",
        *(
            [
                "",
                "**Warning: the code under test changed while this ran, so rows may mix "
                f"versions:** {', '.join(result.changed)}.",
            ]
            if result.changed
            else []
        ),
        "",
        "Machine:",
        *(f"- {fact}" for fact in info.lines()),
        "",
        "Setup:",
        "- **embedded**: `python -m services.runner --any-port`: intake, coordination, planning "
        "and audit in ONE process, SQLite files (WAL; the event stores commit with "
        "synchronous=FULL, durable before the answer), the in-process bus between them. "
        "Every command therefore also pays for the other services' projections of its "
        "event. The target (2,000 commands/s per service process) applies to that process.",
        "- **distributed**: one process per service (`services.runner`'s `start_services`, "
        "started by `--serve` with a Kafka topic of the run's own, deleted afterwards; the "
        "runner itself always uses the shared development topic), their schemas in a fresh "
        "PostgreSQL database (`CREATE DATABASE`, dropped afterwards), Kafka between them. "
        "Commands go to intake (OpenCase) or coordination (MakeReferral); the other three "
        "processes consume the events from Kafka meanwhile, on the same two cores.",
        "- **reference**: `python -m bench.grpc_bench --serve-empty`: intake's gRPC server set "
        "up as the services do (`create_server`: health and reflection; `refusals_as_status` "
        "around the method; the runner's gc settings), whose OpenCase and RegisterClient "
        "return a constant answer. It measures gRPC, asyncio and the load generator on this "
        "machine, without any of casetrail's work: the ceiling for a Python gRPC service "
        "process measured this way.",
        f"- Load generator: a separate process, grpc.aio, {plan.channels} channels (one TCP "
        f"connection each) per service. Closed loop: {plan.concurrency} calls in flight, "
        f"{plan.warmup:.0f} s warm-up, then {plan.seconds:.0f} s measured "
        f"({plan.register_seconds:.0f} s for RegisterClient); commands/s counts successful "
        "answers received in the window. Open loop: calls started on schedule whatever the "
        f"answers, {plan.rate_seconds:.0f} s measured, latency from when each call was due; "
        f"at {plan.rate}/s when the closed loop reached 1.25 times that, else at half the "
        "closed-loop rate (beyond capacity an open loop only measures its own backlog).",
        f"- Commands: OpenCase for {plan.clients} clients registered beforehand, in turn; "
        "RegisterClient with a unique name each (the duplicate check runs and finds nothing; "
        "intake serialises registrations on purpose, see services/intake/app/handlers.py); "
        f"MakeReferral on {plan.cases:,} cases opened beforehand and learnt by coordination "
        "from the bus. Every call has a fresh idempotency key.",
        "- CPU: user+system time from `/proc/<pid>/stat` (the main thread, where the event "
        "loop runs: `/proc/<pid>/task/<pid>/stat`) at both ends of the window; PostgreSQL = "
        "every `postgres` process, Kafka = the broker's JVM, machine busy = `/proc/stat` (all "
        "work on the machine, other people's included). 1.00 = one core fully used.",
        "",
        main_table([*result.reference, *result.embedded, *result.distributed]),
        "",
        *comparison(result),
        "",
        "Where the CPU went in each window (cores):",
        "",
        cpu_split_table(result.reference, ["reference"]),
        "",
        cpu_split_table(result.embedded, ["embedded"]),
        "",
        cpu_split_table(result.distributed, list(SERVICES)),
        "",
        "Before each row the load generator waits until the servers are idle (below 0.15 cores "
        f"together, at most {plan.settle_limit:.0f} s): subscribers work behind the commands, "
        "and a row must not pay for the previous row's backlog. What waiting costs: a 200-byte "
        "`fdatasync` beside the SQLite files and a `SELECT 1` to PostgreSQL, each sampled 20 "
        "times a second in the window; the database counters come from `pg_stat_database` "
        "(every autocommit statement is one transaction; backends report about once a second).",
        "",
        waits_table([*result.embedded, *result.distributed]),
        "",
        *shortfall(result),
    ]
    return "\n".join(lines)


def comparison(result: BenchRun) -> list[str]:
    lines = ["Side by side (same run, one after the other):", "", *reference_comparison(result)]
    for command in ("open_case", "make_referral"):
        embedded = find(result.embedded, command)
        distributed = find(result.distributed, command)
        if embedded is None or distributed is None or not distributed.rate:
            continue
        e_cpu = embedded.per_cpu_second(embedded.spec.server)
        d_cpu = distributed.per_cpu_second(distributed.spec.server)
        lines.append(
            f"- {COMMAND_NAMES[command]}: embedded {fmt_rate(embedded.rate)}/s vs distributed "
            f"{fmt_rate(distributed.rate)}/s = {fmt_ratio(embedded.rate / distributed.rate)}; "
            f"per CPU-second of the serving process {fmt_rate(e_cpu)} vs {fmt_rate(d_cpu)}"
            + (f" = {fmt_ratio(e_cpu / d_cpu)}" if e_cpu and d_cpu else "")
            + " (the embedded process also runs the other three services)."
        )
    for rows in (result.embedded, result.distributed):
        closed = find(rows, "open_case")
        paced = find(rows, "open_case", "rate")
        if closed and paced:
            lines.append(
                f"- {closed.spec.setup} OpenCase latency: p50/p99 {ms(paced.p50_ms)}/"
                f"{ms(paced.p99_ms)} ms at {paced.spec.rate}/s offered "
                f"({fmt_rate(paced.rate)}/s answered), {ms(closed.p50_ms)}/"
                f"{ms(closed.p99_ms)} ms with {closed.spec.concurrency} in flight."
            )
    return lines


def reference_comparison(result: BenchRun) -> list[str]:
    """OpenCase of the services against the empty handler's, in rate and server CPU."""
    empty = find(result.reference, "open_case")
    if empty is None or not empty.rate:
        return []
    embedded = find(result.embedded, "open_case")
    distributed = find(result.distributed, "open_case")
    rates = [
        f"{r.spec.setup} OpenCase {fmt_rate(r.rate)}/s vs the empty handler "
        f"{fmt_rate(empty.rate)}/s = {fmt_ratio(r.rate / empty.rate)}"
        for r in (embedded, distributed)
        if r is not None
    ]
    lines = [f"- Against the reference: {'; '.join(rates)}." if rates else ""]
    empty_us = micros_per_command(empty, empty.spec.server)
    if embedded is not None and empty_us is not None:
        embedded_us = micros_per_command(embedded, embedded.spec.server)
        lines.append(
            f"- Server CPU: the empty handler's process spent {empty_us:.0f} us per call, the "
            f"embedded process {embedded_us:.0f} us per OpenCase"
            + (f" = {fmt_ratio(embedded_us / empty_us)}" if embedded_us else "")
            + "."
        )
    return [line for line in lines if line]
