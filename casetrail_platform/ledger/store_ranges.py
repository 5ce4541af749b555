"""Hash a range of a store's events in a worker process: ``verify_store`` on every core.

A ``RangeReader`` says how a worker opens the store on its own (picklable: the parent sends it
to each worker once); ``start`` opens it when the worker starts, and ``hash_range`` then hashes
the events of leaf indexes [start, stop) (positions start + 1 .. stop), on the same connection
for every range the worker is given. The worker returns the leaf hashes, 32 bytes each in one
blob, and never compares them with anything: the parent does, against the ledger it reads
itself, so nothing a worker could be told by the database is taken on trust but the events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

RangeHashes = tuple[bytes, int | None]
"""(the leaf hashes of the range's events before any hole, concatenated; the first position of
the range missing from the store, or ``None`` when every one is there)."""
RangeHasher = Callable[[int, int], RangeHashes]


class RangeReader(ABC):
    """How a worker process reads the store (its own connection), picklable."""

    @abstractmethod
    def open(self) -> RangeHasher:
        """Open the store in this process; the hasher of leaf indexes [start, stop)."""


@dataclass(frozen=True)
class StoreRanges:
    """What ``LedgerStore.store_ranges`` gives while it is open."""

    reader: RangeReader
    last_position: int
    """The store's newest position, as every worker sees the store (PostgreSQL: one exported
    snapshot; SQLite: appends only add later positions, which no range reaches)."""


def dense_hashes(
    positions_and_hashes: Sequence[tuple[int, bytes]], start: int, stop: int
) -> RangeHashes:
    """``RangeHashes`` of (position, leaf hash) pairs in position order for [start, stop)."""
    pairs = positions_and_hashes
    # Positions are unique and sorted: the right count from the right first to the right last
    # is every one (one join, no loop over the pairs in Python).
    if len(pairs) == stop - start and (
        not pairs or (pairs[0][0], pairs[-1][0]) == (start + 1, stop)
    ):
        return b"".join([leaf for _, leaf in pairs]), None
    hashes: list[bytes] = []
    expected = start + 1
    for position, leaf in pairs:
        if position != expected:
            return b"".join(hashes), expected
        hashes.append(leaf)
        expected += 1
    return b"".join(hashes), (expected if expected <= stop else None)


_hasher: RangeHasher | None = None


def start(reader: RangeReader) -> None:
    """The worker's initializer: opens the store for every range it will hash."""
    global _hasher
    _hasher = reader.open()


def hash_range(first: int, stop: int) -> RangeHashes:
    """A worker's task (``start`` ran first)."""
    assert _hasher is not None, "the worker's initializer opens the store"
    return _hasher(first, stop)
