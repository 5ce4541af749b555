"""``--telemetry``: what metrics and traces cost (issue 11), in the section "## gRPC telemetry
cost (issue 11)" of ``bench/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from bench.common import machine_info, markdown_table, now_utc, replace_section
from bench.grpc_bench.modes import compare_modes, mode_headers, mode_table, switched_run
from bench.grpc_bench.plan import FULL, QUICK, Plan
from bench.grpc_bench.results import RowResult
from bench.grpc_bench.switches import TELEMETRY_MODES

TELEMETRY_HEADING = "## gRPC telemetry cost (issue 11)"


async def telemetry_main(quick: bool, write: bool, keep: bool) -> str:
    """OpenCase and GetCaseView against the embedded services, once per telemetry mode."""
    plan = QUICK if quick else FULL
    results, elapsed = await compare_modes(
        "telemetry",
        TELEMETRY_MODES,
        lambda work, mode, run_id: switched_run(plan, work, run_id, "--telemetry-mode", mode),
        keep,
    )
    body = telemetry_report(plan, quick, results, elapsed)
    if write:
        replace_section(TELEMETRY_HEADING, body)
    return body


def telemetry_report(
    plan: Plan, quick: bool, results: Mapping[str, Sequence[RowResult]], elapsed: float
) -> str:
    headers = mode_headers((), "telemetry", "none")
    table = mode_table(results, TELEMETRY_MODES, "none")
    lines = [
        f"Run: {now_utc()}, {'quick' if quick else 'full'} plan, {elapsed:.0f} s. Command: "
        f"`python -m bench.grpc_bench --telemetry{' --quick' if quick else ''}`.",
        "",
        *machine_info(grpcio=grpc.__version__, opentelemetry=otel_version()).lines(),
        "",
        "The embedded services (`--serve`, as `services.runner` composes them), one server "
        "process per mode and round, the load generator of the rows above: closed loop, "
        f"{plan.concurrency} calls in flight on {plan.channels} channels per service, "
        f"{plan.warmup:.0f} s warm-up then {plan.seconds:.0f} s measured; GetCaseView reads "
        f"{plan.cases} cases opened before. Two rounds, the second in reverse order.",
        "",
        "- **none**: no telemetry interceptor (a switch of this benchmark only).",
        "- **metrics**: the product's default: every call counted by method and status and "
        "timed into a histogram; tracing off (no spans, no trace context stored).",
        "- **metrics+traces**: every call also traced (all sampled): a server span per call, "
        "the trace context stored beside each event and sent as `ce_traceparent`, a span per "
        "projected event; spans batched to an exporter that drops them.",
        "",
        markdown_table(headers, table),
        "",
        "Target (issue 11): tracing and metrics cost at most 5% of commands/s. Server CPU per "
        "call is the server process's CPU time in the window divided by the calls answered: "
        "steadier than calls/s on this shared 2-core machine.",
    ]
    return "\n".join(lines)


def otel_version() -> str:
    from importlib.metadata import version

    return version("opentelemetry-sdk")
