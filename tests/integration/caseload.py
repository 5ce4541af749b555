"""The caseload processor's test tooling: a scenario of seven cases covering every rule (its
events from ``tests.support.case_history``), their publication, the partition of a key, the
worker process (its environment, with audit or without; whether it says it is ready), its HTTP
views read back, and the Kafka topics it made."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from casetrail_platform.bus.kafka import KafkaEventPublisher
from casetrail_platform.bus.kafka_settings import KafkaSettings
from events.envelope import RecordedEvent
from services.caseload.settings import CaseloadSettings
from tests.support.audit_server import RunningAudit
from tests.support.case_history import History
from tests.support.identity import TestIssuer

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3
TODAY = datetime.now(UTC).date()
NOW = datetime.now(UTC)
CONVERGENCE_LIMIT = 120.0
"""Guards against a hung test only; Faust's start-up (group join, changelog recovery) takes a
few seconds, and the test asserts nothing about speed."""


def ago(days: int = 0, minutes: int = 0) -> datetime:
    return NOW - timedelta(days=days, minutes=minutes)


def day(offset: int) -> date:
    return TODAY + timedelta(days=offset)


def scenario(history: History) -> list[RecordedEvent]:
    """Seven cases covering every rule, in the order the relays happen to publish them."""
    h = history
    return [
        # a: ana holds it; its follow-up was due yesterday -> overdue
        h.opened("a", ago(10)),
        h.assigned("a", "w-ana", ago(9)),
        h.contact("a", "w-ana", ago(2), day(-1)),
        # b: handed from ana to ben; due tomorrow -> not overdue
        h.opened("b", ago(10)),
        h.assigned("b", "w-ana", ago(9)),
        h.reassigned("b", "w-ana", "w-ben", ago(5)),
        h.contact("b", "w-ben", ago(1), day(1)),
        # c: closed: off ben's caseload, and its passed due date no longer counts
        h.opened("c", ago(10)),
        h.assigned("c", "w-ben", ago(9)),
        h.contact("c", "w-ben", ago(3), day(-2)),
        h.closed("c", ago(1)),
        # d: an older due date superseded by a newer contact
        h.opened("d", ago(10)),
        h.assigned("d", "w-ana", ago(9)),
        h.contact("d", "w-ana", ago(3), day(-2)),
        h.contact("d", "w-ana", ago(0, 30), day(7)),
        # e: open, nobody assigned yet
        h.opened("e", ago(1)),
        # f: closed and reopened: back with its worker
        h.opened("f", ago(10)),
        h.assigned("f", "w-ana", ago(9)),
        h.closed("f", ago(4)),
        h.reopened("f", ago(2)),
        # g: the coordination relay was ahead of intake's: assigned arrives before opened
        h.assigned("g", "w-ben", ago(9)),
        h.opened("g", ago(10)),
        # h: the assignment happened before the close but its relay lagged -> stays closed
        h.opened("h", ago(10)),
        h.closed("h", ago(1)),
        h.assigned("h", "w-ben", ago(5)),
    ]


@dataclass
class Setup:
    kafka: KafkaSettings
    settings: CaseloadSettings
    topic: str


async def internal_topics(kafka: KafkaSettings, app_id: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        await admin.start()
        return [name for name in await admin.list_topics() if name.startswith(f"{app_id}-")]
    except Exception:  # cleanup only
        return []
    finally:
        await admin.close()


async def publish(kafka: KafkaSettings, topic: str, records: list[RecordedEvent]) -> None:
    async with KafkaEventPublisher(kafka, topic) as publisher:
        await publisher.publish(records)


async def answer(
    port: int, path: str, token: str | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the answer to a GET (with no token unless given, and
    ``headers``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    authorization = "" if token is None else f"Authorization: Bearer {token}\r\n"
    sent = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    try:
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{authorization}{sent}\r\n".encode()
        )
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ", 2)[1]), headers, body


async def get(
    port: int, path: str, token: str | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """The status and JSON body of the answer to a GET (with no token unless given, and
    ``headers``)."""
    status, _, body = await answer(port, path, token, headers)
    return status, json.loads(body)


def worker_env_of(settings: CaseloadSettings, web_port: int) -> dict[str, str]:
    """The environment of a worker process for ``settings`` serving its views on ``web_port``
    (with no audit: the case views answer 503, the status views stay open)."""
    return {
        **os.environ,
        "CASETRAIL_KAFKA_BOOTSTRAP": settings.kafka.bootstrap_servers,
        "CASETRAIL_CASE_EVENTS_TOPIC": settings.topic,
        "CASETRAIL_CASE_EVENTS_PARTITIONS": str(settings.partitions),
        "CASETRAIL_CASELOAD_APP_ID": settings.app_id,
        "CASETRAIL_CASELOAD_DATA_DIR": str(settings.data_dir),
        "CASETRAIL_CASELOAD_WEB_PORT": str(web_port),
    }


@contextlib.asynccontextmanager
async def worker_process(
    env: dict[str, str], log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m services.caseload worker``, logging to ``log_path``, stopped on exit:
    unlike an app started in this process, the worker runs Faust's exactly_once transactions
    (Faust turns them on in its Worker only)."""
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.caseload",
            "worker",
            "--loglevel",
            "info",
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            # A file, not a pipe: nobody reads a pipe while the worker runs, and a full one
            # would block its logging.
            stderr=log_file,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.terminate()
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                # A worker whose commit failed on the way out stops its loop but not its
                # consumer thread, and never exits.
                process.kill()
                await process.wait()


def one_per_partition(names: Iterable[str], partition: Callable[[str], int]) -> dict[int, str]:
    """The first of ``names`` on each partition (every partition gets one)."""
    found: dict[int, str] = {}
    for name in names:
        found.setdefault(partition(name), name)
    assert len(found) == PARTITIONS, found
    return found


def facts_partition_of(worker: str) -> int:
    """The worker-facts partition of ``worker``, whose key the topic serialises as JSON."""
    return partition_of(json.dumps(worker).encode())


def partition_of(key: bytes) -> int:
    """The partition Kafka's default partitioner (ours and Faust's) gives ``key``."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key, partitions, partitions))


def worker_env(
    settings: CaseloadSettings, audit: RunningAudit, issuer: TestIssuer
) -> dict[str, str]:
    """The environment of a worker process for ``settings``, recording reads in ``audit``."""
    return {
        **worker_env_of(settings, settings.web_port),
        "CASETRAIL_CASELOAD_GUARANTEE": settings.processing_guarantee,
        "CASETRAIL_AUDIT_ADDRESS": audit.address,
        # A worker killed -9 leaves the group after this many seconds, which a worker taking
        # over waits out before it reads anything.
        "CASETRAIL_CASELOAD_SESSION_TIMEOUT": "10",
        **issuer.env(),
    }


async def reports_ready(port: int) -> bool:
    """Whether the process serving on ``port`` says its tables are recovered."""
    try:
        return (await answer(port, "/caseload-status/ready/"))[0] == 200
    except (OSError, ValueError, IndexError):  # not listening yet
        return False
