"""Issue 11, bad input: a service process started while PostgreSQL or Kafka is out of reach
waits and retries (one log line per attempt, no stack trace, no password), answers NOT_SERVING
on its plaintext health port meanwhile, serves once the server is there, and stops cleanly on
SIGTERM while waiting."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.identity.grpc_auth import bearer_metadata
from cli.rpc import Person
from tests.faults.servers import server_down
from tests.support.distributed import ENV, _address, _spawn, _stop, fresh_database, fresh_topic
from tests.support.identity import TestIssuer
from tests.support.servers import free_port, kafka_bootstrap

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.kafka]

PASSWORD = "never-in-logs-4711"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RECEPTIONIST = Person("rcp-startup", "receptionist")


async def health_status(port: int) -> int | None:
    """The health port's answer for the whole process (``None``: no answer)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
        status: int = response.status
        return status


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` for up to 90 s (a readiness wait, not a timing assertion)."""
    for _ in range(300):
        if await condition():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"never happened: {what}")


def attempts_logged(log: Path, server: str) -> int:
    return sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if f"{server}" in line and "unreachable" in line
    )


async def test_a_service_started_without_postgres_waits_and_serves_once_it_is_back(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    health_port = free_port()
    async with fresh_database() as dsn, fresh_topic() as topic:
        with_password = make_conninfo(dsn, password=PASSWORD)  # trust auth: accepted, unused
        env = (
            ENV
            | issuer.env()
            | {
                "CASETRAIL_PG_DSN": with_password,
                "CASETRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap(),
                "CASETRAIL_HEALTH_PORT": str(health_port),
            }
        )
        log = tmp_path / "intake.log"
        pg_port = conninfo_to_dict(dsn).get("port")
        process = None
        try:
            async with server_down("postgres"):
                process = await _spawn("intake", topic, tmp_path, env)

                async def retried_twice() -> bool:
                    assert process is not None
                    assert process.returncode is None, log.read_text()
                    return attempts_logged(log, f"PostgreSQL at 127.0.0.1:{pg_port}") >= 2

                await wait_for(retried_twice, "two attempts logged")

                async def not_serving() -> bool:
                    return bool(await health_status(health_port) == NOT_SERVING)

                await wait_for(not_serving, "NOT_SERVING on the health port")
                assert process.returncode is None
            address = await _address("intake", process, tmp_path)

            async def serving() -> bool:
                return bool(await health_status(health_port) == SERVING)

            await wait_for(serving, "SERVING on the health port")
            async with grpc.aio.insecure_channel(address) as channel:
                response = await intake_pb2_grpc.IntakeServiceStub(channel).RegisterClient(
                    intake_pb2.RegisterClientRequest(
                        context=common_pb2.CommandContext(idempotency_key="startup-retry-1"),
                        name=intake_pb2.PersonName(given_names="Late", family_name="Start"),
                        date_of_birth="1970-01-01",
                        preferred_language="en",
                    ),
                    timeout=30,
                    metadata=bearer_metadata(issuer.token_for(RECEPTIONIST)),
                )
            assert response.client_id
        finally:
            if process is not None:
                await _stop(process)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text
        assert PASSWORD not in text
        assert process.returncode == 0, text


async def test_sigterm_while_waiting_for_kafka_stops_cleanly(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with fresh_database() as dsn:
        env = ENV | issuer.env() | {"CASETRAIL_PG_DSN": dsn, "CASETRAIL_KAFKA_BOOTSTRAP": nowhere}
        process = await _spawn("intake", "casetrail.startup-retry", tmp_path, env)
        log = tmp_path / "intake.log"
        try:

            async def waiting() -> bool:
                assert process.returncode is None, log.read_text()
                return attempts_logged(log, f"Kafka at {nowhere}") >= 1

            await wait_for(waiting, "an attempt logged")
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await process.communicate()
        finally:
            await _stop(process)
        text = log.read_text(errors="replace")
        assert process.returncode == 0, text
        assert "Traceback" not in text, text
