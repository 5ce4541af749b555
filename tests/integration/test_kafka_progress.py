"""``caught_up`` on Kafka asked where a member of the group runs: it reads how far that member
applied (told before its commit) first, so it needs neither the group's commit nor a look at
it; asked elsewhere, only the commit tells (``casetrail_platform/bus/kafka_progress.py``)."""

from __future__ import annotations

import os

import pytest
from aiokafka.admin import NewTopic

from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.kafka_consumer import KafkaGroupMember
from casetrail_platform.bus.topics import create_topics
from tests.contract.bus_conftest import (
    Recorder,
    delete_topics,
    eventually,
    kafka_test_settings,
    recorded,
    running,
)
from tests.support.sample_events import sample_registry
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka


async def test_a_member_here_answers_before_its_group_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never_commits(self: KafkaGroupMember, offsets: object) -> None:
        return None

    monkeypatch.setattr(KafkaGroupMember, "_commit", never_commits)
    settings = kafka_test_settings()
    topic = f"test.progress.{os.urandom(6).hex()}"
    try:
        await create_topics(settings, [NewTopic(topic, num_partitions=1, replication_factor=1)])
    except Exception as error:
        server_missing("Kafka", error)
    here = KafkaEventSubscriber(settings, sample_registry(), topic=topic)
    elsewhere = KafkaEventSubscriber(settings, sample_registry(), topic=topic)
    group = f"progress-{os.urandom(4).hex()}"
    event = recorded("c-1", 1, 1)
    try:
        async with KafkaEventPublisher(settings, topic) as publisher:
            await publisher.publish([event])
        recorder = Recorder()
        async with running(here, group, recorder):
            await eventually(lambda: recorder.has_all([event]), "the event")
            # Waiting for the commit would wait out the patience: it never comes.
            assert await here.caught_up(group, "c-1", patience=5.0)
            assert not await elsewhere.caught_up(group, "c-1", patience=0.5)
    finally:
        await here.close()
        await elsewhere.close()
        await delete_topics(settings, [topic])
