"""A group member that fails straight after it started, again and again (a coordinator that
accepts the join and then fails every fetch), is retried with growing delays: a member that
merely started is no recovery, one that consumed for as long as the longest delay is."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterable

import pytest
from aiokafka.errors import InvalidReplicationFactorError, KafkaConnectionError

from casetrail_platform.bus import kafka
from casetrail_platform.bus.kafka import KafkaEventSubscriber
from casetrail_platform.bus.kafka_consumer import KafkaGroupMember
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.retry import Backoff
from casetrail_platform.bus.topics import TopicSettings, create_topics, ensure_dead_letter_topics
from events.catalog_registry import default_registry
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka


async def nothing(_: object) -> None:
    return None


async def test_a_member_failing_right_after_start_backs_off_further_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backoff = Backoff(initial=0.1, maximum=0.8, jitter=0.0)
    settings = dataclasses.replace(kafka_test_settings(), reconnect_backoff=backoff)
    run = uuid.uuid4().hex[:10]
    topic, group = f"test.backoff-{run}", f"test.backoff-{run}.projection"
    try:
        await create_topics(settings, TopicSettings(case_events_topic=topic).new_topics([group]))
    except Exception as error:
        server_missing("Kafka", error)
    started = 0
    delays: list[float] = []
    stop = asyncio.Event()

    async def failing_consume(_: KafkaGroupMember) -> None:
        nonlocal started
        started += 1  # the member did start: joined the real broker
        if started == 5:
            await asyncio.sleep(backoff.maximum + 0.1)  # this one consumed for a while
        raise KafkaConnectionError("the coordinator went away")

    async def recorded_sleep(delay: float, _: asyncio.Event) -> bool:
        delays.append(delay)
        if len(delays) == 5:
            stop.set()
        return stop.is_set()

    monkeypatch.setattr(KafkaGroupMember, "consume", failing_consume)
    monkeypatch.setattr(kafka, "sleep_unless_stopped", recorded_sleep)
    subscriber = KafkaEventSubscriber(
        settings, default_registry(), topic=topic, create_dead_letter_topic=False
    )
    try:
        await asyncio.wait_for(subscriber.run(group, nothing, stop), 120)
    finally:
        await delete_topics(settings, [topic, f"{group}.dlq"])
    assert started == 5
    # The old code reset the count once the member started: 0.1 s every time, for ever.
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 0.1])


async def test_a_member_reconnecting_while_the_brokers_are_fenced_waits_for_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A broker just restarted is fenced until it has caught up with the controller: meanwhile
    # KRaft refuses a topic's creation, the reconnecting member's dead-letter topic's too.
    backoff = Backoff(initial=0.05, maximum=0.1, jitter=0.0)
    settings = dataclasses.replace(kafka_test_settings(), reconnect_backoff=backoff)
    run = uuid.uuid4().hex[:10]
    topic, group = f"test.fenced-{run}", f"test.fenced-{run}.projection"
    try:
        await create_topics(settings, TopicSettings(case_events_topic=topic).new_topics([group]))
    except Exception as error:
        server_missing("Kafka", error)
    creations = 0
    consumed = 0
    stop = asyncio.Event()

    async def fenced_once(
        kafka_settings: KafkaSettings, topics: TopicSettings, groups: Iterable[str]
    ) -> None:
        nonlocal creations
        creations += 1
        if creations == 2:
            raise InvalidReplicationFactorError(
                f"creating topic {group}.dlq: Unable to replicate the partition 1 time(s):"
                " All brokers are currently fenced or in controlled shutdown."
            )
        await ensure_dead_letter_topics(kafka_settings, topics, groups)

    async def consume_then_lose_the_broker(_: KafkaGroupMember) -> None:
        nonlocal consumed
        consumed += 1
        if consumed == 2:
            stop.set()  # consuming again once the brokers are back
            return
        raise KafkaConnectionError("the broker restarts")

    monkeypatch.setattr(kafka, "ensure_dead_letter_topics", fenced_once)
    monkeypatch.setattr(KafkaGroupMember, "consume", consume_then_lose_the_broker)
    subscriber = KafkaEventSubscriber(settings, default_registry(), topic=topic)
    try:
        # The member ended for good here, its group never consuming again in this process.
        await asyncio.wait_for(subscriber.run(group, nothing, stop), 120)
    finally:
        await delete_topics(settings, [topic, f"{group}.dlq"])
    assert (creations, consumed) == (3, 2)
