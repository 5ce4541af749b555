"""The ledger storage port: a log's leaf and subtree hashes and its signed checkpoints, kept
beside one event store (SQLite: ``ledger.db`` next to ``events.db``; PostgreSQL: tables in the
store's schema).

Guarantees every adapter gives (``tests/contract/test_ledger_contract.py``):

* leaves are dense: leaf i (0-based) is the event at global position i + 1, and ``append``
  adds leaves only right after the last one, with every subtree they complete, in one
  transaction (the ledger's size is its own tracking position, like a projection's);
* hashes are kept in tiles (``casetrail_platform.ledger.tiles``): ``subtrees`` answers for any
  complete subtree, folding the stored level below it;
* ``store_leaves`` hashes events *as the event store holds them now*, by the canonical
  encoding of ``casetrail_platform.ledger.canonical`` (both adapters build the canonical bytes
  from the stored columns in SQL: SQLite hashes them here, PostgreSQL in the server);
* checkpoints are kept by tree size; the first kept for a size stays (replicas may race).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

from casetrail_platform.ledger.merkle import Hash, HashRun, SubtreeKey, split_hashes
from casetrail_platform.ledger.note import Checkpoint, Verifier
from casetrail_platform.ledger.store_ranges import StoreRanges
from casetrail_platform.ledger.tiles import TileSlice, fold_slice, leaf_range, locate, slice_leaves


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    note: str
    """The signed note (C2SP tlog-checkpoint in a signed-note envelope)."""


class CheckpointRecord(ABC):
    """Where a log's signed checkpoints are kept outside its database: the checkpoints topic
    (distributed), a file beside the signing key (embedded). Rows deleted or a backup restored
    with the database's rights cannot take back what was published there, so the log checks
    its tree against ``newest`` before it signs anything (``LedgerLog.check_published``)."""

    @abstractmethod
    async def publish(self, checkpoint: StoredCheckpoint) -> None:
        """Keep ``checkpoint`` (a listener of ``LedgerLog``: told of every one signed)."""

    @abstractmethod
    async def newest(self, verifier: Verifier) -> Checkpoint | None:
        """The largest checkpoint kept that verifies under ``verifier`` (``None``: none was
        ever published under that key). Raises when the record cannot be read in bounded
        time: an unknown mark is never taken for no mark."""

    @abstractmethod
    async def stop(self) -> None:
        """Release what ``publish`` or ``newest`` opened."""


class LedgerStore(ABC):
    @abstractmethod
    async def size(self) -> int:
        """How many leaves the ledger holds."""

    @abstractmethod
    async def append(self, first_index: int, runs: Sequence[HashRun]) -> None:
        """Store new leaves (level 0, from ``first_index`` on) and the subtrees they complete
        (``RootAccumulator.extend_levels``' runs; levels a tile does not keep are skipped),
        atomically. Raises ``LedgerConflict`` if the ledger is not at ``first_index`` leaves."""

    @abstractmethod
    async def read_slices(self, slices: Sequence[TileSlice]) -> list[bytes | None]:
        """The stored hashes of each slice, in order (what a tile holds of it; ``None`` for a
        tile not stored). Only the slices travel: a proof reads a few hundred bytes."""

    @abstractmethod
    async def leaf_tiles(self, first: int, last: int) -> list[tuple[int, bytes]]:
        """(index, hashes) of the level-0 tiles ``first``..``last``, in order."""

    async def subtrees(self, keys: Iterable[SubtreeKey]) -> Mapping[SubtreeKey, Hash]:
        """The hashes of these complete subtrees (missing ones are left out)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        slices = [locate(key) for key in wanted]
        found: dict[SubtreeKey, Hash] = {}
        for key, where, packed in zip(wanted, slices, await self.read_slices(slices), strict=True):
            digest = fold_slice(packed, where[3])
            if digest is not None:
                found[key] = digest
        return found

    async def leaf_hash_bytes(self, first_index: int, limit: int) -> bytes:
        """Stored leaf hashes from ``first_index``, at most ``limit``, concatenated."""
        if limit <= 0:
            return b""
        first, last = leaf_range(first_index, limit)
        return slice_leaves(first_index, limit, await self.leaf_tiles(first, last))

    async def leaf_hashes(self, first_index: int, limit: int) -> list[Hash]:
        """Stored leaf hashes from ``first_index``, at most ``limit`` of them."""
        return split_hashes(await self.leaf_hash_bytes(first_index, limit))

    @abstractmethod
    async def store_leaves(self, after_position: int, limit: int) -> list[tuple[int, Hash]]:
        """(position, leaf hash) of the event store's events after ``after_position``, in
        position order, hashed now from the stored rows."""

    @abstractmethod
    async def store_last_position(self) -> int:
        """The event store's newest position."""

    def store_ranges(self) -> AbstractAsyncContextManager[StoreRanges | None]:
        """While open, how worker processes read the events ``store_leaves`` hashes, each on
        a connection of its own, and up to which position (``None``: this store cannot be
        read from another process, ``verify_store`` reads it here)."""
        return nullcontext(None)

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


class LedgerNotCreated(RuntimeError):
    """A store opened read only has no ledger tables (yet): only its service creates them,
    when its ledger first runs (and moves a ledger of the format before tiles into tiles)."""


class LedgerUnreadable(RuntimeError):
    """A store opened read only whose ledger or event file is there but is no database (cut,
    overwritten, replaced): what an auditor's check must tell, naming the file."""
