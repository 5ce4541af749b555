"""The caseload views on the distributed backend (PostgreSQL + Kafka), with the real caseload
processor beside the four services: a worker's caseload read over HTTP is on audit's record
(GetAccessLog) as one access per case, by the reader, before the answer; a refused reader is on
record too; with audit down the views refuse instead of answering unrecorded."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail_platform.policy.vocabulary import Action
from cli.rpc import command, connect, eventually, query
from cli.walk.story import AUDITOR, COORDINATOR, SOCIAL_WORKER
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.e2e.conftest import Casetrail
from tests.e2e.support import learning, new_case
from tests.integration.caseload import get, internal_topics
from tests.support.cases import key
from tests.support.distributed import REPO, ServiceProcesses, service_processes
from tests.support.identity import TestIssuer
from tests.support.servers import free_port, kafka_bootstrap

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.postgres,
    pytest.mark.kafka,
]

PATIENCE = 120.0
"""Guards against a hung test only: Faust's start-up (group join, recovery) takes seconds. (A
wait that once looked like a slow start-up was facts lost in aborted transactions; see
``services.caseload.transactions``.)"""


@asynccontextmanager
async def caseload_worker(
    processes: ServiceProcesses, data_dir: Path, issuer: TestIssuer
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """The caseload processor on the services' topic, recording in their audit; the process
    and its web port."""
    port = free_port()
    app_id = f"test-caseload-{os.urandom(5).hex()}"
    env = {
        **processes.env,
        "CASETRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "CASETRAIL_CASE_EVENTS_TOPIC": processes.topic,
        "CASETRAIL_CASELOAD_APP_ID": app_id,
        "CASETRAIL_CASELOAD_DATA_DIR": str(data_dir / "caseload"),
        "CASETRAIL_CASELOAD_WEB_PORT": str(port),
        "CASETRAIL_AUDIT_ADDRESS": processes.addresses["audit"],
        **issuer.env(),
    }
    with (data_dir / "caseload.log").open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.caseload", "worker", "--loglevel", "warn",
            cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        yield worker, port
    finally:
        if worker.returncode is None:
            worker.terminate()
        await worker.wait()
        kafka = kafka_test_settings()
        await delete_topics(kafka, await internal_topics(kafka, app_id))


async def holding(
    worker: asyncio.subprocess.Process, port: int, path: str, token: str, case_id: str
) -> dict[str, Any]:
    """The caseload at ``path`` once it holds ``case_id`` (the worker starts, then catches up
    with the topic)."""
    seen: Any = "nothing yet"
    try:
        async with asyncio.timeout(PATIENCE):
            while worker.returncode is None:
                try:
                    status, body = await get(port, path, token)
                    seen = (status, body)
                    if status == 200 and case_id in body["case_ids"]:
                        held: dict[str, Any] = body
                        return held
                except (OSError, ValueError) as error:
                    seen = repr(error)
                await asyncio.sleep(0.3)
    except TimeoutError:
        pass
    pytest.fail(f"the caseload never held {case_id}; last seen: {seen!r}")


async def test_a_caseload_read_is_on_audits_record_and_audit_down_means_no_answer(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    async with (
        service_processes(tmp_path, issuer.env()) as processes,
        connect(processes.addresses, issuer.tokens) as connection,
    ):
        casetrail = Casetrail(
            "distributed", processes.addresses, connection, issuer.tokens, 90.0, tmp_path
        )
        case = await new_case(casetrail, "home_care")
        await connection.as_(COORDINATOR).coordination.AssignCase(
            co.AssignCaseRequest(
                context=command(key()), case_id=case.case_id, worker_id=SOCIAL_WORKER.user_id
            )
        )
        auditor = issuer.tokens(AUDITOR)
        path = f"/caseload/{SOCIAL_WORKER.user_id}/"
        async with caseload_worker(processes, tmp_path, issuer) as (worker, port):
            held = await holding(worker, port, path, auditor, case.case_id)
            assert held["worker_id"] == SOCIAL_WORKER.user_id

            refused = await get(port, path, issuer.tokens(COORDINATOR))
            assert refused[0] == 403
            assert refused[1]["reason"] == "ROLE_NOT_ALLOWED"

            # Audit learns the case from the bus too: its groups may join after the case's
            # events were published (a fresh topic), so the case may still be unknown there.
            trail = audit_pb2.GetAccessLogRequest(
                context=query("confidentiality_review"), case_id=case.case_id
            )
            log = await eventually(
                lambda: connection.as_(AUDITOR).audit.GetAccessLog(trail),
                what="audit to learn the case",
                patience=PATIENCE,
                retry=learning,
            )
            caseload_reads = [
                r for r in log.records if r.client_application == "casetrail-caseload"
            ]
            assert caseload_reads, log
            for record in caseload_reads:
                assert (record.accessor.user_id, record.accessor.role) == ("james.liu", "auditor")
                assert list(record.sections) == ["assignment"]
                assert (record.rule, record.source) == ("auditor-review", "casetrail/audit")
                assert record.purpose == "confidentiality_review"
            assert [
                (r.accessor.user_id, r.rule)
                for r in log.refusals
                if r.action == Action.READ_CASELOADS.value
            ] == [(COORDINATOR.user_id, "role-not-allowed")]

            await processes.kill("audit")
            status, body = await get(port, path, auditor)
            assert (status, body["reason"]) == (503, "AUDIT_UNAVAILABLE")
            assert case.case_id not in str(body)
