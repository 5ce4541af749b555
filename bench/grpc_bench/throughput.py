"""The default run (issue 4): the reference, embedded and distributed rows, one after the other,
written to the section "## gRPC commands (issue 4)" of ``bench/RESULTS.md``."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.common import replace_section
from bench.grpc_bench.distributed import distributed_run
from bench.grpc_bench.embedded import embedded_profile, embedded_run
from bench.grpc_bench.plan import FULL, QUICK, REPO, progress
from bench.grpc_bench.reference import reference_run
from bench.grpc_bench.report import report
from bench.grpc_bench.results import BenchRun
from bench.grpc_bench.servers import start_issuer
from bench.grpc_bench.storage import delete_topic, fresh_database, postgres_facts
from infra.servers import KAFKA_BOOTSTRAP, PG_DSN, server_setting, servers_environment

HEADING = "## gRPC commands (issue 4)"


async def run(quick: bool, write: bool, profile: bool | None, keep: bool) -> str:
    from casetrail_platform.bus.kafka_settings import KafkaSettings

    plan = QUICK if quick else FULL
    profile = (not quick) if profile is None else profile
    run_id = f"{int(time.time())}"
    base_dsn = server_setting(PG_DSN)
    bootstrap = KafkaSettings.from_env(servers_environment(KAFKA_BOOTSTRAP)).bootstrap_servers
    topic = f"casetrail.bench-grpc-{run_id}"
    started = time.perf_counter()
    code = code_fingerprint()
    work = Path(tempfile.mkdtemp(prefix="casetrail-grpc-bench-"))
    issuer = start_issuer()
    try:
        progress(started, "reference: an empty OpenCase handler")
        reference = await reference_run(plan, work, run_id)
        progress(started, "embedded: the four services in one process")
        embedded = await embedded_run(plan, work, run_id)
        progress(started, "distributed: four processes on PostgreSQL + Kafka")
        with fresh_database(base_dsn, f"bench_grpc_{run_id}") as dsn:
            facts = {"PostgreSQL": postgres_facts(dsn), "Kafka": bootstrap}
            try:
                distributed, intake_profile = await distributed_run(
                    plan, work, run_id, dsn, topic, profile
                )
            finally:
                await delete_topic(bootstrap, topic)
        profiles = [intake_profile] if intake_profile else []
        if profile:
            progress(started, "embedded under cProfile")
            embedded_profiled = await embedded_profile(plan, work, run_id)
            profiles[:0] = [embedded_profiled] if embedded_profiled else []
        elapsed = time.perf_counter() - started
        progress(started, "done")
        now = code_fingerprint()
        changed = sorted(
            path for path in code.keys() | now.keys() if code.get(path) != now.get(path)
        )
        outcome = BenchRun(
            plan, quick, reference, embedded, distributed, profiles, elapsed, facts, changed
        )
        body = report(outcome)
    finally:
        issuer.stop()
        if keep:
            print(f"logs and data kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if write:
        replace_section(HEADING, body)
    return body


def code_fingerprint() -> dict[str, float]:
    """Modification times of the code under test, to notice edits made while it runs."""
    return {
        str(path.relative_to(REPO)): path.stat().st_mtime
        for folder in ("events", "casetrail_platform", "services")
        for path in (REPO / folder).rglob("*.py")
    }
