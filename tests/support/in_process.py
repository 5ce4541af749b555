"""casetrail's services started in the test's process on either backend (embedded: SQLite and
the in-process bus; distributed: a fresh PostgreSQL database and Kafka topic), for tests that
patch what runs inside them (a consumer group or a relay held back)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, ensure_topics
from casetrail_platform.infrastructure import Infrastructure
from cli.rpc import Connection, connect, refusal_of
from services.runner import start_services, stop_services
from tests.support.distributed import fresh_database, fresh_topic
from tests.support.identity import TestIssuer
from tests.support.servers import kafka_bootstrap


@asynccontextmanager
async def services_in_process(
    backend: str, tmp_path: Path, issuer: TestIssuer, services: tuple[str, ...]
) -> AsyncIterator[Connection]:
    """``services`` started on ``backend`` (``embedded`` or ``distributed``), trusting
    ``issuer``'s tokens; the connection calls them (and a service not started never)."""
    async with _infrastructure(backend, tmp_path, issuer) as infra:
        running = await start_services(infra, services, "127.0.0.1", dict.fromkeys(services, 0))
        try:
            addresses = {s.name: f"127.0.0.1:{s.port}" for s in running}
            unstarted = {
                name: "127.0.0.1:9" for name in ("intake", "coordination", "planning", "audit")
            }
            async with connect(unstarted | addresses, issuer.tokens) as connection:
                yield connection
        finally:
            await stop_services(running)


@asynccontextmanager
async def _infrastructure(
    backend: str, tmp_path: Path, issuer: TestIssuer
) -> AsyncIterator[Infrastructure]:
    if backend == "embedded":
        yield Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
        return
    async with fresh_database() as dsn, fresh_topic() as topic:
        kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap())
        await ensure_topics(kafka, TopicSettings(case_events_topic=topic))
        yield Infrastructure.distributed(tmp_path, dsn, kafka, topic, verifier=issuer.verifier())


async def outcome(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The call's status code and ``ErrorInfo`` reason (``OK`` and ``""`` if answered)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        refusal = refusal_of(error)
        return refusal.code, refusal.reason
    return grpc.StatusCode.OK, ""
