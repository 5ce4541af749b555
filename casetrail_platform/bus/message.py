"""A message as it sits on the bus: bytes plus where it was read from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events.envelope import RecordedEvent

Headers = tuple[tuple[str, bytes], ...]


def as_headers(headers: Iterable[tuple[str, bytes]] | None) -> Headers:
    return tuple((name, bytes(value)) for name, value in headers or ())


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

    def header(self, name: str) -> bytes | None:
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None
