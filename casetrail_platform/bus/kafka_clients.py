"""aiokafka client construction shared by the Kafka publisher and subscriber."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import InvalidReplicationFactorError, KafkaTimeoutError

from casetrail_platform.bus.errors import is_retriable
from casetrail_platform.bus.kafka_settings import KafkaSettings


def new_producer(
    settings: KafkaSettings, client_id: str, *, max_request_size: int = 1_048_576
) -> Any:
    """An idempotent producer that waits for every in-sync replica; ``max_request_size``: the
    largest record it sends (aiokafka's default, unless a topic takes larger ones)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_bytes,
        compression_type=settings.compression_type,
        request_timeout_ms=settings.request_timeout_ms,
        max_request_size=max_request_size,
        **settings.security.client_options(),
    )


async def topic_partitions(
    settings: KafkaSettings, topic: str, purpose: str
) -> list[TopicPartition]:
    """The topic's partitions, in order (none if it does not exist); ``purpose`` ends the
    admin client's id."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-{purpose}",
        request_timeout_ms=settings.request_timeout_ms,
        **settings.security.client_options(),
    )
    try:
        # Started inside: a start that fails after connecting (version probe timed out, say)
        # leaves the connections open until closed.
        await admin.start()
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code"):
        return []  # unknown topic
    numbers = sorted(p["partition"] for p in described.get("partitions") or [])
    return [TopicPartition(topic, p) for p in numbers]


async def close_quietly(client: Any, grace: float) -> None:
    """Stop an aiokafka client without letting a dead broker hang or fail the caller."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), grace)


def transient(error: BaseException) -> bool:
    """Whether a client failure may pass once the broker is reachable again."""
    # aiokafka marks its own timeouts non-retriable, yet for us they mean "broker away". So is
    # a topic's creation refused for its replication factor while the brokers are fenced (just
    # restarted, not caught up with the controller yet): KRaft says so in the refusal. A factor
    # more than the brokers registered ("cannot be reached because only N broker(s) are
    # registered") is a setting to fix: retried, every group would wait on it for ever.
    return (
        is_retriable(error)
        or isinstance(error, KafkaTimeoutError)
        or (isinstance(error, InvalidReplicationFactorError) and BROKERS_FENCED in str(error))
    )


BROKERS_FENCED = "fenced"
"""What KRaft's refusal of a topic's replication factor says while the brokers are fenced
("All brokers are currently fenced or in controlled shutdown")."""


def describe(error: BaseException) -> str:
    """``Type: message`` once (aiokafka errors already start with their type name)."""
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name
