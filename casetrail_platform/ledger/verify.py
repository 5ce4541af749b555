"""Recompute a store's tree from its events and name the first position that is wrong.

``verify_store`` reads every stored event once and hashes it by the canonical encoding
(``canonical``): in this process in batches of ``BATCH`` rows, or, for a store of
``PARALLEL_FROM`` events or more, in worker processes on every usable CPU, ``RANGE`` events a
task (``store_ranges``), whose hashes it takes in order. Either way it checks here, keeping
about 64 bytes per event, that:

* positions are dense from 1 (a deleted event leaves a hole, reordered ones break the order);
* each event hashes to the leaf the ledger stored for its position (an edited, deleted,
  reordered or replaced event is named by its position), and the ledger holds a leaf for
  every position its size covers (leaves deleted from its tiles are named too);
* the store is not shorter than the ledger (a truncated store names the first missing one);
* the root recomputed at each signed checkpoint's size is the signed root, and every stored
  checkpoint's signature verifies (catches a ledger rebuilt from a tampered store: then the
  first bad position lies after the last checkpoint that still matches);
* the ledger covers every checkpoint known, trusted or stored (its tables emptied or rolled
  back below one are named): only events beyond all of them are noted as not hashed yet.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from casetrail_platform.ledger.merkle import HASH_SIZE, Hash, SubtreeKey, packed_parents, root_at
from casetrail_platform.ledger.note import Checkpoint, LogKeys, NoteError, open_checkpoint
from casetrail_platform.ledger.port import LedgerStore
from casetrail_platform.ledger.store_ranges import (
    RangeAnswer,
    RangeWorker,
    StoreRanges,
    WorkerEnded,
    dense_hashes,
)

BATCH = 20_000
PARALLEL_FROM = 100_000
"""Below this many events, one process: starting worker processes costs ~100 ms."""
RANGE = 1 << 13
"""Leaves a worker hashes per task: 2**15 kept the parent waiting ~0.1 s longer for the first."""
Progress = Callable[[int], Awaitable[None] | None]


class VerificationWorkerDied(RuntimeError):
    """A worker process ended without answering: the store was not verified."""


@dataclass
class StoreVerification:
    leaves: int = 0
    """Events read and hashed."""
    ledger_size: int = 0
    checkpoints_checked: int = 0
    first_bad_position: int | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, position: int | None, problem: str) -> None:
        if self.problem is None:
            self.first_bad_position = position
            self.problem = problem


async def verify_store(
    ledger: LedgerStore,
    verifier: LogKeys | None,
    *,
    trusted: Sequence[Checkpoint] = (),
    progress: Progress | None = None,
    workers: int | None = None,
) -> StoreVerification:
    """``trusted``: checkpoints kept elsewhere (by audit, or the log's own published mark,
    ``CheckpointRecord.newest``), read before this is called, so that a ledger rebuilt or
    emptied together with its checkpoints is caught too. ``workers``: processes
    reading and hashing the events side by side (default: the CPUs this process may use) for
    a store of ``PARALLEL_FROM`` events or more; 1 reads them all here."""
    result = StoreVerification()
    signed = await _checkpoints(ledger, verifier, result)
    # Read after the checkpoints (and after the trusted ones, read by the caller first): a log
    # stores its leaves before it signs them, so a size read now covers every checkpoint known
    # unless leaves were deleted, even while its service goes on appending and signing.
    result.ledger_size = await ledger.size()
    if verifier is None and signed:
        result.notes.append(
            f"{len(signed)} stored checkpoints read WITHOUT checking their signatures (no public"
            " key): a ledger rewritten together with its checkpoints would pass"
        )
    # At equal sizes the outside checkpoints go first: they are the ones to trust.
    tagged = [(c.size, 0, c) for c in trusted] + [(c.size, 1, c) for c in signed]
    tagged.sort(key=lambda item: (item[0], item[1]))
    subtrees = _Subtrees()
    wanted = usable_cpus() if workers is None else workers
    in_workers = False
    if wanted > 1 and await ledger.store_last_position() >= PARALLEL_FROM:
        async with ledger.store_ranges() as ranges:
            if ranges is not None:
                in_workers = True
                await _hash_in_workers(ledger, ranges, wanted, subtrees, result, progress)
    if not in_workers:
        await _hash_here(ledger, subtrees, result, progress)
    if not result.ok:
        return result
    result.leaves = subtrees.size
    _check_roots(subtrees, tagged, trusted_given=bool(trusted), result=result)
    if result.ok:
        _check_covered(tagged, result)
    if result.ok and subtrees.size < result.ledger_size:
        result.fail(
            subtrees.size + 1,
            f"the store ends at position {subtrees.size} but the ledger holds"
            f" {result.ledger_size} events",
        )
    elif result.ok and subtrees.size > result.ledger_size:
        # Beyond every checkpoint known (_check_covered): events not signed yet, sealing lag.
        result.notes.append(
            f"{subtrees.size - result.ledger_size} events are not hashed into the ledger yet"
        )
    return result


async def _hash_here(
    ledger: LedgerStore,
    subtrees: _Subtrees,
    result: StoreVerification,
    progress: Progress | None,
) -> None:
    """Read and hash every event in this process, in batches of ``BATCH``."""
    # While this batch is compared and folded into the tree here, the next one is read and
    # hashed (SQLite's thread, or PostgreSQL's server, works meanwhile). The stored leaves are
    # read before the next batch is asked for: both take the adapter's one connection.
    reading = asyncio.ensure_future(ledger.store_leaves(0, BATCH))
    try:
        while batch := await reading:
            start = subtrees.size
            hashed, missing = dense_hashes(batch, start, start + len(batch))
            stored = await ledger.leaf_hash_bytes(start, len(batch))
            if missing is None:
                reading = asyncio.ensure_future(ledger.store_leaves(start + len(batch), BATCH))
            if not await _take(subtrees, (hashed, missing, []), stored, result, progress):
                return
    finally:
        # A read under way is let finish (cancelling it could spoil the adapter's connection
        # mid-query); whatever it raised is of no interest once verification has stopped.
        if not reading.done():
            await asyncio.wait([reading])
        if not reading.cancelled():
            reading.exception()


async def _hash_in_workers(
    ledger: LedgerStore,
    ranges: StoreRanges,
    workers: int,
    subtrees: _Subtrees,
    result: StoreVerification,
    progress: Progress | None,
) -> None:
    """Read and hash the events in ``workers`` processes (``store_ranges``), ``RANGE`` leaves
    a range, each on a connection of its own; here, take their hashes in order, compare them
    with the ledger's and fold them into the tree. Ranges go to the workers in turn, two each
    asked ahead, so none waits while the one in order is checked."""
    last = ranges.last_position
    bounds = iter([(at, min(at + RANGE, last)) for at in range(0, last, RANGE)])
    started: list[RangeWorker] = []
    try:
        for _ in range(min(workers, -(-last // RANGE))):
            started.append(await RangeWorker.start(ranges.reader))
        asked: deque[tuple[int, int, RangeWorker]] = deque()
        turns = itertools.cycle(started)
        for start, stop in itertools.islice(bounds, 2 * len(started)):
            asked.append((start, stop, next(turns)))
            await asked[-1][2].ask(start, stop)
        while asked:
            start, stop, worker = asked.popleft()
            try:
                hashed, missing, levels = await worker.answer()
            except WorkerEnded as error:
                raise VerificationWorkerDied(
                    f"a worker process hashing positions {start + 1} to {stop} ended before"
                    f" it answered ({error}: killed, out of memory, or the store unreadable,"
                    " see its error above): the store was not verified"
                ) from error
            for following in itertools.islice(bounds, 1):
                asked.append((*following, worker))
                await worker.ask(*following)
            stored = await ledger.leaf_hash_bytes(start, stop - start)
            if not await _take(subtrees, (hashed, missing, levels), stored, result, progress):
                return
    finally:
        for worker in started:
            await worker.stop()


async def _take(
    subtrees: _Subtrees,
    answer: RangeAnswer,
    stored: bytes,
    result: StoreVerification,
    progress: Progress | None,
) -> bool:
    """Compare the leaf hashes of the events from ``subtrees.size`` on (``answer``: those
    before a hole at its missing position, and the subtrees over them a worker computed) with
    the ledger's (``stored``, fewer where the ledger is behind), fold them into the tree, and
    say whether to go on. The first bad position is named: an event not hashing to its leaf,
    else a position within the ledger's size whose leaf it does not hold, else the hole."""
    hashed, missing, levels = answer
    start = subtrees.size
    common = min(len(hashed), len(stored))
    if hashed[:common] != stored[:common]:
        offset = next(
            i
            for i in range(common // HASH_SIZE)
            if hashed[i * HASH_SIZE : (i + 1) * HASH_SIZE]
            != stored[i * HASH_SIZE : (i + 1) * HASH_SIZE]
        )
        result.leaves = start + offset
        result.fail(
            start + offset + 1,
            f"the event at position {start + offset + 1} does not hash to the ledger's"
            " leaf (edited, replaced or moved)",
        )
        return False
    # Fewer stored leaves than the ledger's size covers here: a gap in its tiles (the leaves
    # are read up to the first missing tile), not a ledger behind its store.
    covered = min(len(hashed) // HASH_SIZE, result.ledger_size - start)
    if len(stored) // HASH_SIZE < covered:
        result.leaves = start + len(stored) // HASH_SIZE
        result.fail(
            result.leaves + 1,
            f"the ledger covers {result.ledger_size} events but holds no leaf hash for"
            f" position {result.leaves + 1} (deleted from its tiles)",
        )
        return False
    subtrees.extend(hashed, levels)
    if missing is not None:
        result.leaves = subtrees.size
        result.fail(missing, f"position {missing} is missing from the store")
        return False
    if progress is not None:
        outcome = progress(subtrees.size)
        if outcome is not None:
            await outcome
    return True


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Subtrees:
    """Every complete subtree of the recomputed tree, level by level, packed (32 bytes a hash:
    about 64 bytes an event in all). The levels a worker sent with its leaves are taken as
    they are; the rest, one node hash a leaf in all, are computed here."""

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def extend(self, leaves: bytes, levels: Sequence[bytes] = ()) -> None:
        """``leaves`` (packed) after the last ones, with the complete subtrees over them from
        level 1 up that a worker computed (``merkle.packed_levels``), if any."""
        start = self.size
        for level, hashes in enumerate((leaves, *levels)):
            if level == len(self._levels):
                self._levels.append(bytearray())
            assert len(self._levels[level]) == (start >> level) * HASH_SIZE
            self._levels[level] += hashes
        level = 0
        while len(below := self._levels[level]) >= 2 * HASH_SIZE:
            if level + 1 == len(self._levels):
                self._levels.append(bytearray())
            above = self._levels[level + 1]
            paired, pairs = len(above) * 2, len(below) // (2 * HASH_SIZE) * 2 * HASH_SIZE
            if paired < pairs:
                above += packed_parents(bytes(below[paired:pairs]))
            level += 1

    def source(self, keys: Iterable[SubtreeKey]) -> dict[SubtreeKey, Hash]:
        return {
            (level, index): bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])
            for level, index in keys
        }


def _check_roots(
    subtrees: _Subtrees,
    tagged: list[tuple[int, int, Checkpoint]],
    *,
    trusted_given: bool,
    result: StoreVerification,
) -> None:
    """The root of the recomputed leaves at each checkpoint's size must be the signed one."""
    size = subtrees.size
    # With outside checkpoints, only they vouch for a prefix: the log's own may be forged.
    last_matching = 0
    for signed_size, kind, checkpoint in tagged:
        if signed_size > size:
            first = last_matching + 1 if kind == 0 else size + 1
            result.fail(
                first,
                f"the store ends at position {size} but a checkpoint of {signed_size} events"
                f" was signed; the first bad position is between {first} and {size + 1}",
            )
            return
        if root_at(signed_size, subtrees.source) != checkpoint.root:
            result.fail(
                last_matching + 1,
                f"the tree of the first {signed_size} events is not the one signed; the first"
                f" bad position is between {last_matching + 1} and {signed_size}",
            )
            return
        if kind == 0 or not trusted_given:
            last_matching = signed_size
        result.checkpoints_checked += 1


def _check_covered(tagged: list[tuple[int, int, Checkpoint]], result: StoreVerification) -> None:
    """Every checkpoint known, trusted or stored, must lie within the ledger. One larger than it
    was signed over leaves the ledger no longer holds: its tables emptied or rolled back with
    the database's rights, no key needed. The store may still hash to the signed root, but the
    ledger no longer covers what the log signed and published, and its events beyond the
    ledger would otherwise pass as merely not hashed yet."""
    beyond = [(size, kind) for size, kind, _ in tagged if size > result.ledger_size]
    if beyond:
        size, kind = beyond[0]
        which = "trusted checkpoint" if kind == 0 else "checkpoint stored in the ledger"
        result.fail(
            None,
            f"the ledger holds {result.ledger_size} events but the {which} of size {size} was"
            f" signed over more: the ledger no longer covers positions {result.ledger_size + 1}"
            f" to {size} (its leaves deleted or rolled back)",
        )


async def _checkpoints(
    ledger: LedgerStore, verifier: LogKeys | None, result: StoreVerification
) -> list[Checkpoint]:
    """Every stored checkpoint, opened (signature checked when a verifier is known: under a
    schedule of keys, by the key valid for its size, and by both at a handover)."""
    opened: list[Checkpoint] = []
    after = -1
    while True:
        stored = await ledger.checkpoints(after_size=after)
        if not stored:
            return opened
        for checkpoint in stored:
            try:
                if verifier is None:
                    body = checkpoint.note.partition("\n\n")[0] + "\n"
                    opened.append(Checkpoint.parse(body))
                else:
                    opened.append(open_checkpoint(checkpoint.note, verifier))
            except NoteError as error:
                result.fail(None, f"the checkpoint of size {checkpoint.size} is invalid: {error}")
                return opened
            if opened[-1].size != checkpoint.size:
                result.fail(None, f"the checkpoint stored as size {checkpoint.size} signs another")
                return opened
            after = checkpoint.size
