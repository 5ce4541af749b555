"""Recorded events as every bus carries them: Kafka records in CloudEvents binary mode."""

from __future__ import annotations

from collections.abc import Sequence

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.errors import PublishError
from events.cloudevents import KafkaRecord, to_kafka_binary
from events.envelope import RecordedEvent
from events.errors import UnreadableStoredEventError


def bus_records(records: Sequence[RecordedEvent]) -> list[KafkaRecord]:
    """``records`` encoded for the bus. A stored record that no longer decodes (an older
    release stored it past a model's rules, and it is published upcast) is refused for good,
    as one the broker refuses: the outbox relay parks it with its case's later records, and
    every other case is published, instead of failing on it round after round for ever."""
    try:
        return [to_kafka_binary(record) for record in records]
    except UnreadableStoredEventError as error:
        raise PublishError(f"cannot be encoded: {failure_text(error)}", refused=True) from error
