"""Which case-event messages the caseload processor reads, and decoding them."""

from __future__ import annotations

from collections.abc import Sequence

from events.cloudevents import KAFKA_HEADER_PREFIX, from_kafka_binary
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from services.caseload.domain import TRACKED_TYPES

_TYPE_HEADER = f"{KAFKA_HEADER_PREFIX}type"


def tracked_event(
    key: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    value: bytes | None,
    registry: EventRegistry,
) -> RecordedEvent | None:
    """The case event of a Kafka record if its type is tracked, else ``None``.

    The ``ce_type`` header is looked at first, so the many events of other types are skipped
    without parsing. Raises ``InvalidEventError`` (or whatever else breaks) for a record that
    cannot be decoded; a record without ``ce_type`` (e.g. structured mode) is decoded whole.
    """
    event_type = next((raw for name, raw in headers if name == _TYPE_HEADER), None)
    if event_type is not None and event_type.decode(errors="replace") not in TRACKED_TYPES:
        return None
    recorded = from_kafka_binary(key, headers, value, registry)
    return recorded if recorded.event_type in TRACKED_TYPES else None
