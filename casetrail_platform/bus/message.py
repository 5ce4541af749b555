"""A message as it sits on the bus: bytes plus where it was read from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events.envelope import RecordedEvent

Headers = tuple[tuple[str, bytes], ...]


def as_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    """``headers`` as immutable pairs. A header sent without a value (Kafka allows it; aiokafka
    gives ``None``) reads as empty: the record is then decoded, or dead-lettered if it needs that
    header, like any other, instead of failing its whole poll."""
    return tuple((name, b"" if value is None else bytes(value)) for name, value in headers or ())


@dataclass(frozen=True, slots=True)
class BusMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    recorded: RecordedEvent | None = field(default=None, compare=False, repr=False)
    """The event these bytes encode, when the bus was handed it in this process (the embedded
    bus): decoding the bytes again would only give an equal, immutable copy."""
    _by_name: dict[str, bytes] | None = field(default=None, init=False, compare=False, repr=False)
    """The headers by name (the first of a repeated name), made on the first look-up: every
    consumer group of the embedded bus looks at the same message's type and ordering headers."""

    def header(self, name: str) -> bytes | None:
        by_name = self._by_name
        if by_name is None:
            by_name = {}
            for header_name, value in self.headers:
                by_name.setdefault(header_name, value)
            object.__setattr__(self, "_by_name", by_name)
        return by_name.get(name)


TYPE_HEADER = "ce_type"


def past_last_of(
    messages: Iterable[BusMessage], key: bytes, types: frozenset[str], start: int
) -> int:
    """One past the offset of the last of ``messages`` keyed ``key`` whose ``ce_type`` is one
    of ``types`` (``start`` if none is): how far a group must have got for them
    (``EventSubscriber.caught_up``'s ``types``)."""
    wanted = {event_type.encode() for event_type in types}
    past = start
    for message in messages:
        if message.key == key and message.header(TYPE_HEADER) in wanted:
            past = max(past, message.offset + 1)
    return past
