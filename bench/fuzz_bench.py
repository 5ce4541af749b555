"""Fuzzing every RPC (issue 8): ten thousand generated requests and more, and what came back.

``python -m bench.fuzz_bench [--requests N] [--no-write]`` starts the four services on the
embedded backend (in this process, a temporary data directory), walks the demo's case to
collect real requests, then sends ``N`` generated requests spread evenly over every RPC of
every service: the generators of ``tests/support/fuzzing.py``, as ``tests/fuzz`` uses them
with fewer examples (half of them a real request with one field changed, the others built
from nothing, two in five hostile: NUL and control characters, huge strings and lists,
timestamps outside any calendar, invalid UTF-8). It writes the section "## Fuzzing
(issue 8)" of ``bench/RESULTS.md``: answers by status, and every broken promise (an
undocumented status such as UNKNOWN, INTERNAL or RESOURCE_EXHAUSTED, a status over the size
bound, a refusal that wrote, an answer after the deadline). Not a performance benchmark:
the rate is context only.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from bench.common import machine_info, markdown_table, now_utc, replace_section
from services.demo import embedded_services
from tests.support.fuzzing import (
    DEADLINE_SECONDS,
    DOCUMENTED,
    BackgroundLoop,
    Call,
    Known,
    Outcomes,
    calls,
    close_channels,
    every_rpc,
    learn,
    perform,
)

HEADING = "## Fuzzing (issue 8)"


def fuzz(requests: int) -> tuple[Outcomes, float, int]:
    """Send ``requests`` generated calls; the outcomes, seconds taken and seed RPCs known."""
    rpcs = every_rpc()
    per_rpc = -(-requests // len(rpcs))
    loop = BackgroundLoop()
    out = Outcomes()
    with tempfile.TemporaryDirectory(prefix="casetrail-fuzz-") as directory:
        data_dir = Path(directory)
        services = embedded_services(data_dir)
        local = loop.run(services.__aenter__())
        try:
            known = Known()
            loop.run(learn(local.addresses, local.tokens, known))
            started = time.perf_counter()
            for rpc in rpcs:

                @settings(
                    max_examples=per_rpc,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(call=calls(rpc, known))
                def send(call: Call) -> None:
                    loop.run(perform(call, local.addresses, local.tokens, data_dir, out))

                send()
                print(f"{rpc.path}: {out.summary()}", flush=True)
            elapsed = time.perf_counter() - started
        finally:
            loop.run(close_channels())
            loop.run(services.__aexit__(None, None, None))
            loop.stop()
    return out, elapsed, len(known.seeds)


def report(out: Outcomes, elapsed: float, seeded: int, rpcs: int) -> str:
    info = machine_info()
    rows = [
        [name, f"{count:,}", "yes" if name in {code.name for code in DOCUMENTED} else "**no**"]
        for name, count in out.by_status.most_common()
    ]
    failures = "\n".join(f"- {failure}" for failure in out.failures[:30]) or "none"
    forbidden = sum(out.by_status[name] for name in ("UNKNOWN", "INTERNAL", "RESOURCE_EXHAUSTED"))
    return "\n".join(
        [
            f"Run {now_utc()} on: " + "; ".join(info.lines()[:4]),
            "",
            f"{out.calls:,} requests over {rpcs} RPCs of the four services (embedded backend); "
            f"the demo walk's real requests seeded {seeded} of the RPCs; {out.undecodable:,} "
            f"not valid protobuf. {out.calls / elapsed:,.0f} requests/s (context only). "
            f"Each answer within {DEADLINE_SECONDS:.0f} s, status bounded, refusals write "
            "nothing (audit's record of a refused read aside).",
            "",
            markdown_table(["status", "answers", "documented"], rows),
            "",
            f"UNKNOWN + INTERNAL + RESOURCE_EXHAUSTED: **{forbidden}**. Broken promises: "
            f"**{len(out.failures)}**",
            "",
            failures,
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    out, elapsed, seeded = fuzz(options.requests)
    body = report(out, elapsed, seeded, len(every_rpc()))
    print(body)
    if not options.no_write:
        replace_section(HEADING, body)
    if out.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
