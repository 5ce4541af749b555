"""A Kafka record header may have no value (the protocol allows it; aiokafka gives ``None``).
Converting such a record for delivery raised ``TypeError`` (``bytes(None)``) before the
per-record dead-letter path: the poll was dropped and the member crashed on the same offset
for ever. Now the header reads as empty: a record that needs it is dead-lettered, one that
does not is handled, and the records after it flow on."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from casetrail_platform.bus.kafka_consumer import KafkaGroupMember
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import as_headers
from casetrail_platform.bus.retry import RetryPolicy
from events.cloudevents import to_kafka_binary
from events.dead_letters import REASON
from events.envelope import RecordedEvent
from tests.contract.bus_conftest import Recorder, recorded
from tests.support.sample_events import sample_registry

TOPIC = "casetrail.case-events"
ZERO = TopicPartition(TOPIC, 0)


def test_a_header_without_a_value_reads_as_empty() -> None:
    assert as_headers([("x-trace", None), ("ce_id", b"1")]) == (("x-trace", b""), ("ce_id", b"1"))


class Consumer:
    def __init__(self) -> None:
        self.commits: list[Mapping[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {ZERO}

    def highwater(self, tp: TopicPartition) -> int:
        return 4

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class DeadLetterProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, **record: Any) -> None:
        self.sent.append({"topic": topic, **record})


def _record(offset: int, event: RecordedEvent, null: str | None = None) -> SimpleNamespace:
    """``event`` as aiokafka hands it over, the header ``null`` (added if new) without value."""
    key, headers, value = to_kafka_binary(event)
    named = [(n, None if n == null else v) for n, v in headers]
    if null is not None and null not in dict(headers):
        named.append((null, None))
    return SimpleNamespace(
        topic=TOPIC, partition=0, offset=offset, key=key, value=value, headers=named
    )


async def test_a_poll_with_null_headers_is_handled_and_its_poison_dead_lettered() -> None:
    events = [recorded("c-1", 1, 1), recorded("c-2", 1, 2), recorded("c-3", 1, 3)]
    poison = recorded("c-4", 1, 4)
    recorder = Recorder()
    member = KafkaGroupMember(
        settings=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        topic=TOPIC,
        group="casetrail.test.null-headers",
        handler=recorder,
        registry=sample_registry(),
        retry=RetryPolicy(),
        stop=asyncio.Event(),
        on_assignment=None,
    )
    consumer, letters = Consumer(), DeadLetterProducer()
    member._consumer, member._dead_letters = consumer, letters
    polled = [
        _record(0, events[0]),
        _record(1, events[1], null="x-trace"),  # a header the event does not need
        _record(2, poison, null="ce_id"),  # one it does: poison
        _record(3, events[2]),
    ]

    assert await member._handle({ZERO: polled})

    assert [e.event_id for e in recorder.deliveries] == [e.event_id for e in events]
    [letter] = letters.sent
    assert letter["value"] == polled[2].value
    reason = dict(letter["headers"])[REASON].decode()
    assert reason.startswith("undecodable: ")
    assert "ce_id" in reason
    assert consumer.commits == [{ZERO: 4}]
