"""Lists that grow with a case, cut to what one gRPC answer can carry (README, "Answers are
bounded"): an answer past gRPC's 4 MiB never reaches the caller, after the server did the
work and recorded the read, so a case could never be read again once a list outgrew it.

Each list is bounded in count and in bytes: an entry's texts are bounded in characters, which
are up to 4 bytes each, so a count alone does not bound the answer."""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

E = TypeVar("E", bound=Message)

ENTRY_FRAMING = 4
"""A list entry's tag (1 byte) and length (at most 3 bytes under 2 MiB)."""


@dataclass(frozen=True, slots=True)
class Cap:
    """How many entries of a list an answer holds at most, and how many bytes they may take."""

    listed: int
    size: int


def chosen(
    entries: Sequence[E], cap: Cap, rank: Callable[[int, E], tuple[float | int | bool, ...]]
) -> set[int]:
    """The indices of the best ranked of ``entries`` (``rank``: of its index and itself, lowest
    first) that fit ``cap``."""
    kept: set[int] = set()
    size = 0
    for index in sorted(range(len(entries)), key=lambda i: rank(i, entries[i]))[: cap.listed]:
        size += entries[index].ByteSize() + ENTRY_FRAMING
        if size > cap.size:
            break
        kept.add(index)
    return kept


def cut(
    entries: MutableSequence[E], cap: Cap, rank: Callable[[int, E], tuple[float | int | bool, ...]]
) -> tuple[bool, int]:
    """Keep the ``chosen`` of ``entries``, in their order: whether any was left out, and how
    many there were."""
    total = len(entries)
    kept = chosen(entries, cap, rank)
    if len(kept) < total:
        listed = [entry for index, entry in enumerate(entries) if index in kept]
        del entries[:]
        entries.extend(listed)
    return len(kept) < total, total
