"""`casetrail verify-store` on the distributed backend holds the ledger to the checkpoint its
log published on the checkpoints topic (real PostgreSQL and Kafka), as the service does on
restart: with the database's rights and no key, an event edited and the ledger's tables
emptied passed ("0 checkpoints checked ... OK", exit 0)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, create_topics
from casetrail_platform.ledger import hosting
from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
from events.topics import LEDGER_CHECKPOINTS_TOPIC
from tests.support.cli import casetrail_exit
from tests.support.ledger import signed_store
from tests.support.servers import database_of_its_own, kafka_bootstrap

pytestmark = pytest.mark.kafka


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own: the store's schema is ``intake_events`` whatever the test."""
    with database_of_its_own("verify_mark") as dsn:
        yield dsn


async def _published_store(dsn: str, key: Path, events: int) -> None:
    """Signed as the service signs: published on the checkpoints topic, then stored."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap())
    await create_topics(settings, [TopicSettings().ledger_topic()])  # as every start does
    record = KafkaCheckpointPublisher(settings)
    try:
        await signed_store(dsn, key, events, record)
    finally:
        await record.stop()


def test_a_ledger_emptied_is_held_to_the_checkpoint_published_on_kafka(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_published_store(database, tmp_path / "intake.key", 9))
    keys = tmp_path / "keys.txt"
    keys.write_text((tmp_path / "intake.pub").read_text())
    storage = ["--backend", "distributed", "--pg-dsn", database, "--data-dir", str(tmp_path)]
    verify = ["verify-store", "intake", *storage, "--keys", str(keys)]
    assert casetrail_exit(*verify) == 0, capsys.readouterr()
    assert "intake: its log published a checkpoint of 9 events" in capsys.readouterr().out

    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute("DELETE FROM intake_events.ledger_tiles")
        admin.execute("DELETE FROM intake_events.ledger_checkpoints")
    assert casetrail_exit(*verify) == 1
    assert "no longer covers positions 1 to 9" in capsys.readouterr().out

    with psycopg.connect(database, autocommit=True) as admin:
        events = "intake_events.stored_events"
        admin.execute(f"ALTER TABLE {events} DISABLE TRIGGER stored_events_are_immutable")
        admin.execute(
            f"UPDATE {events} SET data = convert_to(replace(convert_from(data, 'UTF8'), 'visit',"
            " 'visiT'), 'UTF8') WHERE position = 4"
        )
    assert casetrail_exit(*verify) == 1
    out = capsys.readouterr().out
    assert "TAMPERED at position 1: the tree of the first 9 events is not the one signed" in out


class _NotAuthorizedToRead(KafkaCheckpointPublisher):
    """The checkpoints topic as a login with Describe but no Read on it reads it: the broker
    lists its offsets but refuses the fetch, which aiokafka raises from ``getmany``."""

    @staticmethod
    async def _page(
        consumer: Any, partition: TopicPartition, start: int, end: int, key: bytes
    ) -> list[str]:
        raise TopicAuthorizationFailedError(partition.topic)


def test_a_login_not_authorized_to_read_the_checkpoints_is_told_not_a_traceback(
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The auditor's Kafka login without Read on the topic: verify-store ended in aiokafka's
    traceback; now one line naming the topic and what the login lacks, exit 2 (a setting that
    cannot be used, as a PostgreSQL login without its rights is)."""
    asyncio.run(_published_store(database, tmp_path / "intake.key", 3))
    keys = tmp_path / "keys.txt"
    keys.write_text((tmp_path / "intake.pub").read_text())
    monkeypatch.setattr(
        hosting, "checkpoint_record", lambda infra, _: _NotAuthorizedToRead(infra.kafka)
    )
    storage = ["--backend", "distributed", "--pg-dsn", database, "--data-dir", str(tmp_path)]

    assert casetrail_exit("verify-store", "intake", *storage, "--keys", str(keys)) == 2
    err = capsys.readouterr().err
    assert "casetrail verify-store: Kafka did not authorize this login: " in err, err
    assert LEDGER_CHECKPOINTS_TOPIC in err, err
