"""Which case-event messages the caseload processor reads, and decoding them."""

from __future__ import annotations

from collections.abc import Sequence

from casetrail_platform.limits import MOMENT_RANGE, within_moment_bounds
from events.cloudevents import KAFKA_HEADER_PREFIX, UndecodableMessageError, from_kafka_binary
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from events.registry import EventRegistry
from services.caseload.domain import TRACKED_TYPES

_TYPE_HEADER = f"{KAFKA_HEADER_PREFIX}type"
_TIME_HEADER = f"{KAFKA_HEADER_PREFIX}time"


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

    A tracked event must have happened at a moment a request may name
    (``limits.within_moment_bounds``), as every event the services record did: the folds order
    events by that moment in UTC, and one near the ends of datetime's range (year 1 an hour
    east of UTC) cannot be taken to UTC at all.
    """
    event_type = next((raw for name, raw in headers if name == _TYPE_HEADER), None)
    if event_type is not None and event_type.decode(errors="replace") not in TRACKED_TYPES:
        return None
    recorded = from_kafka_binary(key, headers, value, registry)
    if recorded.event_type not in TRACKED_TYPES:
        return None
    if not within_moment_bounds(recorded.metadata.occurred_at):
        problem = FieldProblem(_TIME_HEADER, f"must be a moment {MOMENT_RANGE} (UTC)")
        raise UndecodableMessageError([problem], recorded.event_type)
    return recorded
