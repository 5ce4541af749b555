"""A service process stops within Kubernetes' grace period (the chart's
terminationGracePeriodSeconds, after the preStop sleep) even when PostgreSQL or Kafka stops
answering with its connections open (frozen with SIGSTOP: the kernel still answers TCP, as
for a server on a host cut off), and what it acknowledged is still there afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import grpc
import psycopg
import pytest

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.shutdown import STOP_DEADLINE_SECONDS
from cli.rpc import Person
from tests.faults.servers import frozen, seconds_to_end_after_sigterm
from tests.support.distributed import ENV, _address, _spawn, _stop, fresh_database, fresh_topic
from tests.support.identity import TestIssuer
from tests.support.servers import kafka_bootstrap

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.kafka]

RECEPTIONIST = Person("rcp-stop", "receptionist")
# After the preStop sleep, Kubernetes gives the process the rest of the grace period.
GRACE_AFTER_SIGTERM = 30 - 5


async def _register(address: str, issuer: TestIssuer, key: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await intake_pb2_grpc.IntakeServiceStub(channel).RegisterClient(
            intake_pb2.RegisterClientRequest(
                context=common_pb2.CommandContext(idempotency_key=key),
                name=intake_pb2.PersonName(given_names="Stop", family_name="Bounded"),
                date_of_birth="1970-01-01",
                preferred_language="en",
            ),
            timeout=30,
            metadata=bearer_metadata(issuer.token_for(RECEPTIONIST)),
        )
    client_id: str = response.client_id
    return client_id


async def _stored(dsn: str, client_id: str) -> bool:
    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute(
            "SELECT count(*) FROM intake_events.stored_events WHERE stream LIKE %s",
            (f"%{client_id}%",),
        )
        row = await cursor.fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("server", ["postgres", "kafka"])
async def test_a_service_stops_within_its_grace_with_a_server_frozen(
    tmp_path: Path, issuer: TestIssuer, server: str
) -> None:
    async with fresh_database() as dsn, fresh_topic() as topic:
        servers = {"CASETRAIL_PG_DSN": dsn, "CASETRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap()}
        env = ENV | issuer.env() | servers
        process = await _spawn("intake", topic, tmp_path, env)
        try:
            address = await _address("intake", process, tmp_path)
            client_id = await _register(address, issuer, f"stop-{server}")
            with frozen(server):
                # Something in flight on the frozen server: a command waiting for the store,
                # or a relay waiting for Kafka.
                pending = asyncio.ensure_future(_register(address, issuer, f"late-{server}"))
                await asyncio.sleep(1)
                took = await seconds_to_end_after_sigterm(process, GRACE_AFTER_SIGTERM + 20)
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            log = (tmp_path / "intake.log").read_text(errors="replace")
            assert process.returncode is not None, f"running after {took:.0f} s:\n{log[-3000:]}"
            assert took < GRACE_AFTER_SIGTERM, f"{took:.1f} s:\n{log[-3000:]}"
            assert took < STOP_DEADLINE_SECONDS + 2, log[-3000:]
        finally:
            await _stop(process)
        assert await _stored(dsn, client_id)
        # The relay could not publish it: the next start does (nothing acknowledged lost).
        again = await _spawn("intake", topic, tmp_path, env)
        try:
            await _address("intake", again, tmp_path)
            for _ in range(30):  # the relay publishes within a few seconds of the start
                if await _published(topic, client_id):
                    break
            else:
                raise AssertionError("the acknowledged registration was never published")
        finally:
            await _stop(again)


async def _published(topic: str, client_id: str) -> bool:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
    finally:
        await consumer.stop()
    return any(
        client_id.encode() in (record.key or b"") + b"".join(v or b"" for _, v in record.headers)
        for records in batches.values()
        for record in records
    )


async def test_a_second_sigterm_while_stopping_ends_the_process_at_once(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    async with fresh_database() as dsn, fresh_topic() as topic:
        servers = {"CASETRAIL_PG_DSN": dsn, "CASETRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap()}
        process = await _spawn("intake", topic, tmp_path, ENV | issuer.env() | servers)
        try:
            address = await _address("intake", process, tmp_path)
            client_id = await _register(address, issuer, "second-sigterm")
            with frozen("kafka"):  # the stop waits for Kafka: long enough for a second one
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(2)
                assert process.returncode is None
                began = time.monotonic()
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(5):
                    await process.communicate()
                assert time.monotonic() - began < 2
        finally:
            await _stop(process)
        log = (tmp_path / "intake.log").read_text(errors="replace")
        assert process.returncode == 128 + signal.SIGTERM, log[-3000:]
        assert "second SIGTERM while stopping: ending at once" in log
        assert await _stored(dsn, client_id)  # acknowledged before: still there
