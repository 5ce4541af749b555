"""Fixtures of the integration tests: a fresh case-event topic and caseload settings for the
caseload processor's tests (its topics deleted after), and a Kafka broker of the test's own."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.bus.topics import create_topics
from services.caseload.settings import CaseloadSettings
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.integration.caseload import PARTITIONS, Setup, internal_topics
from tests.integration.relaying import PrivateBroker
from tests.support.servers import free_port, server_missing


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """A fresh topic and the caseload processor's settings for it (Kafka's, the test's)."""
    kafka = kafka_test_settings()
    suffix = os.urandom(5).hex()
    topic = f"test.caseload.{suffix}"
    settings = CaseloadSettings(
        kafka=kafka,
        topic=topic,
        partitions=PARTITIONS,
        app_id=f"test-caseload-{suffix}",
        data_dir=tmp_path / "caseload",
        commit_interval=0.2,
        web_enabled=False,
    )
    try:
        await create_topics(kafka, settings.topics.new_topics())
    except Exception as error:
        server_missing("Kafka", error)
    try:
        yield Setup(kafka, settings, topic)
    finally:
        await delete_topics(kafka, [topic, *await internal_topics(kafka, settings.app_id)])


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    """A broker started for the test alone (stopped after), or the test skipped."""
    port = free_port()
    env = {
        **os.environ,
        "CASETRAIL_KAFKA_DIR": str(tmp_path / "kafka"),
        "CASETRAIL_KAFKA_PORT": str(port),
        "CASETRAIL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "CASETRAIL_KAFKA_HEAP": "256m",
    }
    broker = PrivateBroker(env, f"127.0.0.1:{port}")
    try:
        await broker.start()
    except Exception as error:
        await broker.stop()
        server_missing("A private Kafka broker (infra/kafka/start.sh)", error)
    try:
        yield broker
    finally:
        await broker.stop()
