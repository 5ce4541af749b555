"""Which start-up failures are outages to wait for (``services.startup.unreachable``)."""

from __future__ import annotations

from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from services.startup import unreachable


def test_a_broker_still_fenced_is_waited_for_and_a_wrong_setting_is_not() -> None:
    # As topics.create_topics words the broker's refusals.
    fenced = InvalidReplicationFactorError(
        "creating topic casetrail.case-events: Unable to replicate the partition 3 time(s): All"
        " brokers are currently fenced or in controlled shutdown."
    )
    too_many = InvalidReplicationFactorError(
        "creating topic casetrail.case-events: The target replication factor of 3 cannot be"
        " reached because only 1 broker(s) are registered."
    )
    assert unreachable(fenced, "PostgreSQL", "Kafka") == "Kafka"
    assert unreachable(KafkaConnectionError(), "PostgreSQL", "Kafka") == "Kafka"
    assert unreachable(too_many, "PostgreSQL", "Kafka") is None
    assert unreachable(TopicAuthorizationFailedError(), "PostgreSQL", "Kafka") is None
