"""Topics as code against the real broker: idempotent creation, settings, refusals."""

from __future__ import annotations

import os

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidReplicationFactorError

from casetrail_platform.bus.errors import TopicConfigurationError
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, ensure_topics
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.support.servers import server_missing

pytestmark = pytest.mark.kafka


@pytest.fixture
async def settings() -> KafkaSettings:
    settings = kafka_test_settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
    except Exception as error:
        server_missing("Kafka", error)
    finally:
        await admin.close()
    return settings


async def topic_config(settings: KafkaSettings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [resource] = response.to_object()["resources"]
        return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    finally:
        await admin.close()


async def test_topics_are_created_once_with_unlimited_retention(settings: KafkaSettings) -> None:
    suffix = os.urandom(5).hex()
    topics = TopicSettings(case_events_topic=f"test.topics.{suffix}", partitions=4)
    group = f"test.topics-group.{suffix}"
    try:
        await ensure_topics(settings, topics, [group])
        await ensure_topics(settings, topics, [group])  # a second start changes nothing

        for name in (topics.case_events_topic, f"{group}.dlq"):
            config = await topic_config(settings, name)
            assert config["retention.ms"] == "-1"
            assert config["retention.bytes"] == "-1"
            assert config["cleanup.policy"] == "delete"
            assert config["unclean.leader.election.enable"] == "false"
            assert config["min.insync.replicas"] == "1"

        with pytest.raises(TopicConfigurationError, match="has 4 partitions, settings say 6"):
            await ensure_topics(settings, TopicSettings(case_events_topic=topics.case_events_topic))
    finally:
        await delete_topics(settings, [topics.case_events_topic, f"{group}.dlq"])


async def test_production_settings_refuse_a_single_broker(settings: KafkaSettings) -> None:
    topic = f"test.production.{os.urandom(5).hex()}"
    try:
        with pytest.raises(InvalidReplicationFactorError, match=topic):
            await ensure_topics(settings, TopicSettings.production(topic))
    finally:
        await delete_topics(settings, [topic])
