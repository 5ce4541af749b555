"""A message as it sits on the bus: bytes plus where it was read from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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

    def header(self, name: str) -> bytes | None:
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None
