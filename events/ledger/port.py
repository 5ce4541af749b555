"""The ledger storage port: a log's leaf and subtree hashes and its signed checkpoints, kept
beside one event store (SQLite: ``ledger.db`` next to ``events.db``; PostgreSQL: tables in the
store's schema).

Guarantees every adapter gives (``tests/contract/test_ledger_contract.py``):

* leaves are dense: leaf i (0-based) is the event at global position i + 1, and ``append``
  adds leaves only right after the last one, with every subtree they complete, in one
  transaction (the ledger's size is its own tracking position, like a projection's);
* ``store_leaves`` hashes events *as the event store holds them now*, by the canonical
  encoding of ``events.ledger.canonical`` (both adapters give the same hashes);
* checkpoints are kept by tree size; the first kept for a size stays (replicas may race).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from events.ledger.merkle import Hash, SubtreeKey


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    note: str
    """The signed note (C2SP tlog-checkpoint in a signed-note envelope)."""


class LedgerStore(ABC):
    @abstractmethod
    async def size(self) -> int:
        """How many leaves the ledger holds."""

    @abstractmethod
    async def append(self, first_index: int, nodes: Sequence[tuple[SubtreeKey, Hash]]) -> None:
        """Store new leaves (level 0, from ``first_index`` on) and the subtrees they complete,
        atomically. Raises ``LedgerConflict`` if the ledger is not at ``first_index`` leaves."""

    @abstractmethod
    async def subtrees(self, keys: Iterable[SubtreeKey]) -> Mapping[SubtreeKey, Hash]:
        """The stored hashes of these complete subtrees (missing ones are left out)."""

    @abstractmethod
    async def leaf_hashes(self, first_index: int, limit: int) -> list[Hash]:
        """Stored leaf hashes from ``first_index``, at most ``limit`` of them."""

    @abstractmethod
    async def store_leaves(self, after_position: int, limit: int) -> list[tuple[int, Hash]]:
        """(position, leaf hash) of the event store's events after ``after_position``, in
        position order, hashed now from the stored rows."""

    @abstractmethod
    async def store_last_position(self) -> int:
        """The event store's newest position."""

    @abstractmethod
    async def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Keep a signed checkpoint; if one of that size is kept already (another replica of
        the service signed it first), keep that one."""

    @abstractmethod
    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[StoredCheckpoint]:
        """Stored checkpoints of size greater than ``after_size``, smallest first."""

    @abstractmethod
    async def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    @abstractmethod
    async def close(self) -> None: ...


class LedgerConflict(RuntimeError):
    """Another writer appended to the ledger first."""
