"""Records a Kafka member only passed by, not committed yet, at a rebalance: those of the
partitions revoked are committed before the partitions move on, and none is ever committed for
a partition the member no longer holds (the broker takes a commit of any partition from a
member of the group, so it would move back the offset of the member holding it now)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiokafka import TopicPartition

from casetrail_platform.bus.kafka_consumer import KafkaGroupMember
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.retry import RetryPolicy
from events.envelope import RecordedEvent
from tests.support.sample_events import sample_registry

TOPIC = "casetrail.case-events"
ZERO, ONE, TWO = (TopicPartition(TOPIC, n) for n in range(3))


class Consumer:
    """What the member asks of its aiokafka consumer here: what it holds, and commits."""

    def __init__(self, held: set[TopicPartition]) -> None:
        self.held = held
        self.commits: list[Mapping[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.held)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


async def _nothing(event: RecordedEvent) -> None:
    return None


def member_holding(consumer: Consumer) -> KafkaGroupMember:
    member = KafkaGroupMember(
        settings=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        topic=TOPIC,
        group="casetrail.test.passed",
        handler=_nothing,
        registry=sample_registry(),
        retry=RetryPolicy(),
        stop=asyncio.Event(),
        on_assignment=None,
    )
    member._consumer = consumer
    return member


async def test_the_partitions_revoked_commit_what_was_passed_by_and_the_rest_waits() -> None:
    consumer = Consumer({ZERO, ONE})
    member = member_holding(consumer)
    member._passed = {ZERO: 5, ONE: 7}

    await member._listener.on_partitions_revoked({ZERO})

    assert consumer.commits == [{ZERO: 5}]
    assert member._passed == {ONE: 7}


async def test_a_partition_no_longer_held_is_never_committed() -> None:
    consumer = Consumer({ONE, TWO})
    member = member_holding(consumer)
    member._passed = {ZERO: 5, ONE: 7}

    await member._commit_passed()
    assert consumer.commits == [{ONE: 7}]
    assert member._passed == {}

    # With records handed over: merged, the larger offset of a partition kept.
    member._passed = {ZERO: 9, ONE: 8, TWO: 3}
    assert member._with_passed({ONE: 10, TWO: 2}) == {ONE: 10, TWO: 3}
    assert member._passed == {}


class Fetcher:
    """The attributes aiokafka's fetcher builds each fetch request from."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._fetch_min_bytes = settings.fetch_min_bytes
        self._fetch_max_wait_ms = settings.fetch_max_wait_ms


class PollingConsumer(Consumer):
    """Polls that come back empty; the member is stopped after the first that waits
    ``full_wait_ms``."""

    def __init__(self, held: set[TopicPartition], stop: asyncio.Event, full_wait_ms: int) -> None:
        super().__init__(held)
        self._stop, self._full_wait_ms = stop, full_wait_ms
        self._fetcher = Fetcher(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
        self.polls: list[tuple[int, int]] = []  # (timeout_ms, fetch wait the poll ran with)

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[object]]:
        self.polls.append((timeout_ms, self._fetcher._fetch_max_wait_ms))
        await asyncio.sleep(timeout_ms / 1000)  # an empty poll waits out its timeout
        if timeout_ms == self._full_wait_ms:
            self._stop.set()
        return {}


async def test_a_poll_cut_short_to_commit_says_nothing_about_the_topic_being_quiet() -> None:
    stop = asyncio.Event()
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", poll_timeout_ms=100)
    consumer = PollingConsumer({ZERO}, stop, settings.poll_timeout_ms)
    member = member_holding(consumer)
    member._stop, member._settings = stop, settings
    member._passed, member._passed_since = {ZERO: 5}, time.monotonic() - 0.2

    await member.consume()

    *cut_short, (full, wait_after_cut_short) = consumer.polls
    assert cut_short
    assert all(timeout < full for timeout, _ in cut_short)
    assert consumer.commits == [{ZERO: 5}]
    # The empty polls cut short left the fetches flowing; the one that waited out went quiet.
    assert {wait for _, wait in cut_short} == {wait_after_cut_short} == {settings.fetch_max_wait_ms}
    assert consumer._fetcher._fetch_max_wait_ms == settings.quiet_fetch_wait_ms
