"""``--policy``: what the access policy and access recording cost (issue 9), on both backends, in
the section "## gRPC access policy and access recording cost (issue 9)" of ``bench/RESULTS.md``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from bench.common import machine_info, markdown_table, now_utc, replace_section
from bench.grpc_bench.modes import compare_modes, mode_headers, mode_table, switched_run
from bench.grpc_bench.plan import FULL, QUICK, Plan
from bench.grpc_bench.results import RowResult
from bench.grpc_bench.switches import POLICY_MODES

POLICY_HEADING = "## gRPC access policy and access recording cost (issue 9)"


POLICY_BACKENDS = ("embedded", "distributed")


async def policy_main(quick: bool, write: bool, keep: bool) -> str:
    """OpenCase and GetCaseView with the access policy off and on, on both backends."""
    plan = QUICK if quick else FULL

    async def run_mode(work: Path, mode: str, run_id: str) -> list[RowResult]:
        results = []
        for backend in POLICY_BACKENDS:
            results += await switched_run(plan, work, run_id, "--policy-mode", mode, backend)
        return results

    load_before = os.getloadavg()
    results, elapsed = await compare_modes("access-policy", POLICY_MODES, run_mode, keep)
    loads = (load_before, os.getloadavg())
    body = policy_report(plan, quick, results, elapsed, loads)
    if write:
        replace_section(POLICY_HEADING, body)
    return body


def policy_report(
    plan: Plan,
    quick: bool,
    results: Mapping[str, Sequence[RowResult]],
    elapsed: float,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    headers = mode_headers(["backend"], "access policy", "off")
    table = []
    for backend in POLICY_BACKENDS:
        table += mode_table(results, POLICY_MODES, "off", backend, [backend])
    busy = [r.cores("machine") for rows in results.values() for r in rows]
    lines = [
        f"Run: {now_utc()}, {'quick' if quick else 'full'} plan, {elapsed:.0f} s. Command: "
        f"`python -m bench.grpc_bench --policy{' --quick' if quick else ''}`.",
        "",
        *machine_info(grpcio=grpc.__version__).lines(),
        "",
        f"Load average (1/5/15 min) {_loads(loads[0])} at the start, {_loads(loads[1])} at the "
        f"end; the whole machine was busy {min(busy, default=0):.2f}-{max(busy, default=0):.2f} "
        "cores (of 2) in the measured windows: other engineers' work ran beside it.",
        "",
        "Both backends, one after the other for each mode, two rounds (the second in reverse "
        "order): **embedded**, the four services in one `--serve` process (SQLite, in-process "
        "bus; audit's timeline of every access event runs in that process too); "
        "**distributed**, one process per service on a database and a Kafka topic of their "
        "own (server CPU: intake's process for OpenCase, planning's for GetCaseView). The load "
        f"generator of the rows above: closed loop, {plan.concurrency} calls in flight on "
        f"{plan.channels} channels per service, {plan.warmup:.0f} s warm-up then "
        f"{plan.seconds:.0f} s measured; GetCaseView reads {plan.cases} cases opened before, "
        "as a coordinator (rule agency-coordinator: sensitive fields withheld). Token checks "
        "as the product does them in both modes.",
        "",
        "- **off**: the access policy switched off by this benchmark only (the product has no "
        "such switch): no facts looked up, no decision, nothing withheld, nothing recorded.",
        "- **on**: as the services run: the case's policy facts read, the decision, sensitive "
        "fields withheld, `casetrail.record.accessed` appended durably before the answer.",
        "",
        "Targets (issue 9): OpenCase within 15% of off (commands do not go through the read "
        "policy: any difference is noise and the policy projection's work in the background), "
        "GetCaseView within 25%.",
        "",
        markdown_table(headers, table),
    ]
    return "\n".join(lines)


def _loads(values: Sequence[float]) -> str:
    return " / ".join(f"{value:.1f}" for value in values)
