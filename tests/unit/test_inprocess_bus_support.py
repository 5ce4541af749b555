"""Pieces shared by every bus adapter: backoff, retriable errors, settings, topic names."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from casetrail_platform.bus.deadletter import parse_dead_letter
from casetrail_platform.bus.errors import RetriableHandlerError, is_retriable
from casetrail_platform.bus.kafka_clients import transient
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.retry import (
    Backoff,
    RetryPolicy,
    Stopped,
    sleep_unless_stopped,
    until_stopped,
)
from casetrail_platform.bus.topics import TopicSettings
from events.topics import dead_letter_topic


def test_backoff_grows_to_its_ceiling() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


@pytest.mark.parametrize("multiplier", [1.5, 2.0, 10.0])
def test_backoff_stays_at_its_ceiling_however_many_failures(multiplier: float) -> None:
    """An outage of hours is thousands of failures: ``2.0 ** 1024`` overflowed a float, and
    every caller (consumers, relay, reconnects) ended for good at the 1,025th."""
    backoff = Backoff(initial=0.2, maximum=2.0, multiplier=multiplier, jitter=0.0)
    for failures in (1_025, 10_000, 10**18):
        assert backoff.delay(failures) == 2.0


def test_jitter_only_shortens_the_delay() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=0.5)
    assert all(0.5 <= backoff.delay(3) <= 1.0 for _ in range(100))


@pytest.mark.parametrize(
    "arguments", [(0.0, 1.0), (2.0, 1.0), (0.1, 1.0, 0.5), (0.1, 1.0, 2.0, 1.0)]
)
def test_backoff_rejects_nonsense(arguments: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(*arguments)


def test_retry_policy_counts_attempts() -> None:
    assert RetryPolicy(max_attempts=3).gives_up_after(3)
    assert not RetryPolicy(max_attempts=3).gives_up_after(2)
    assert not RetryPolicy(max_attempts=None).gives_up_after(10_000)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_which_errors_are_retried() -> None:
    assert is_retriable(RetriableHandlerError("locked"))
    assert is_retriable(ConnectionResetError())
    assert is_retriable(TimeoutError())
    assert is_retriable(KafkaConnectionError())
    assert not is_retriable(TopicAuthorizationFailedError())
    assert not is_retriable(ValueError("bad data"))
    assert not is_retriable(KeyError("x"))


def test_kafka_timeouts_count_as_a_broker_away() -> None:
    from aiokafka.errors import KafkaTimeoutError

    assert transient(KafkaTimeoutError())
    assert not transient(TopicAuthorizationFailedError())


def test_a_replication_factor_is_waited_for_only_while_the_brokers_are_fenced() -> None:
    from aiokafka.errors import InvalidReplicationFactorError

    # As topics.create_topics words the broker's refusals.
    assert transient(
        InvalidReplicationFactorError(
            "creating topic g.dlq: Unable to replicate the partition 3 time(s): All brokers are"
            " currently fenced or in controlled shutdown."
        )
    )
    # A setting to fix: every group retrying it would wait for ever, health SERVING.
    assert not transient(
        InvalidReplicationFactorError(
            "creating topic g.dlq: The target replication factor of 3 cannot be reached because"
            " only 1 broker(s) are registered."
        )
    )


async def test_waits_end_when_stop_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await sleep_unless_stopped(600, stop)

    never = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await never.wait()
        finally:
            cancelled.set()

    with pytest.raises(Stopped):
        await until_stopped(forever(), stop)
    assert cancelled.is_set()
    assert await until_stopped(asyncio.sleep(0, "done"), asyncio.Event()) == "done"


def test_settings_come_from_the_environment() -> None:
    assert KafkaSettings.from_env({}).bootstrap_servers == "127.0.0.1:19092"
    assert KafkaSettings.from_env({"CASETRAIL_KAFKA_PORT": "29092"}).bootstrap_servers == (
        "127.0.0.1:29092"
    )
    both = {"CASETRAIL_KAFKA_PORT": "29092", "CASETRAIL_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}
    assert KafkaSettings.from_env(both).bootstrap_servers == "k1:9092,k2:9092"
    with pytest.raises(ValueError, match="CASETRAIL_KAFKA_PORT"):
        KafkaSettings.from_env({"CASETRAIL_KAFKA_PORT": "nine"})


def test_how_long_the_broker_holds_a_fetch_is_configurable_within_bounds() -> None:
    assert KafkaSettings.from_env({}).fetch_max_wait_ms == 20
    waiting = {"CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS": "200"}
    assert KafkaSettings.from_env(waiting).fetch_max_wait_ms == 200
    for bad in ("0", "-5", "10001", "fast", "1.5"):
        with pytest.raises(ValueError, match=r"CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS .* 1 to 10000"):
            KafkaSettings.from_env({"CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS": bad})


def test_topic_settings_for_production_keep_acknowledged_events_safe() -> None:
    production = TopicSettings.production()
    assert production.replication_factor == 3
    assert production.min_insync_replicas == 2
    config = production.topic_config()
    assert config["retention.ms"] == "-1"
    assert config["cleanup.policy"] == "delete"
    assert config["unclean.leader.election.enable"] == "false"
    assert config["min.insync.replicas"] == "2"
    names = [topic.name for topic in TopicSettings().new_topics(["planning"])]
    assert names == ["casetrail.case-events", "planning.dlq"]


def test_bad_topic_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="min_insync_replicas"):
        TopicSettings(replication_factor=1, min_insync_replicas=2)
    with pytest.raises(ValueError, match="partition"):
        TopicSettings(partitions=0)
    with pytest.raises(ValueError, match="topic name"):
        dead_letter_topic("a group/with a slash")


def test_a_message_without_dead_letter_headers_is_not_a_dead_letter() -> None:
    with pytest.raises(ValueError, match="casetrail_dlq_reason"):
        parse_dead_letter(b"k", b"v", (("ce_id", b"x"),))
