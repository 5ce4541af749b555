"""``--auth``: what checking tokens costs (issue 9), in the section "## gRPC authentication cost
(issue 9)" of ``bench/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from bench.common import machine_info, markdown_table, now_utc, replace_section
from bench.grpc_bench.modes import compare_modes, mode_headers, mode_table, switched_run
from bench.grpc_bench.plan import FULL, QUICK, Plan
from bench.grpc_bench.results import RowResult
from bench.grpc_bench.switches import AUTH_MODES

AUTH_HEADING = "## gRPC authentication cost (issue 9)"


async def auth_main(quick: bool, write: bool, keep: bool) -> str:
    """OpenCase and GetCaseView against the embedded services, once per token-checking mode."""
    plan = QUICK if quick else FULL
    results, elapsed = await compare_modes(
        "authentication",
        AUTH_MODES,
        lambda work, mode, run_id: switched_run(plan, work, run_id, "--auth-mode", mode),
        keep,
    )
    body = auth_report(plan, quick, results, elapsed)
    if write:
        replace_section(AUTH_HEADING, body)
    return body


def auth_report(
    plan: Plan, quick: bool, results: Mapping[str, Sequence[RowResult]], elapsed: float
) -> str:
    headers = mode_headers((), "token checks", "off")
    table = mode_table(results, AUTH_MODES, "off")
    lines = [
        f"Run: {now_utc()}, {'quick' if quick else 'full'} plan, {elapsed:.0f} s. Command: "
        f"`python -m bench.grpc_bench --auth{' --quick' if quick else ''}`.",
        "",
        *machine_info(grpcio=grpc.__version__, pyjwt=jwt_version()).lines(),
        "",
        "The embedded services (`--serve`, as `services.runner` composes them), one server "
        "process per mode and round, the same load generator as the rows above: closed loop, "
        f"{plan.concurrency} calls in flight on {plan.channels} channels per service, "
        f"{plan.warmup:.0f} s warm-up then {plan.seconds:.0f} s measured; GetCaseView reads "
        f"{plan.cases} cases opened before. Two rounds, the second in reverse order. Every call "
        "carries a bearer token (ES256) from an issuer serving its JWKS on 127.0.0.1.",
        "",
        "- **off**: the caller is read from the token's claims without any check (a switch of "
        "this benchmark only; the product has no such mode).",
        "- **every-call**: signature, issuer, audience, expiry and claims checked on every call "
        "(nothing remembered): what a token seen for the first time costs.",
        "- **product**: as the services run: a verified token is remembered (by its exact text) "
        "until it expires or the issuer's keys change.",
        "",
        markdown_table(headers, table),
        "",
        "Server CPU per call is the server process's CPU time in the window divided by the "
        "calls answered: steadier than calls/s on this shared 2-core machine. The access "
        "policy and access recording (issue 9, items 2-4) add their own costs later.",
    ]
    return "\n".join(lines)


def jwt_version() -> str:
    import jwt

    return str(jwt.__version__)
