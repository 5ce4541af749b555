"""Recompute a store's tree from its events and name the first position that is wrong.

``verify_store`` reads every stored event once, in batches of ``BATCH`` rows, hashes it by the
canonical encoding (``canonical.leaf_hashes``), and checks, keeping about 64 bytes per event,
that:

* positions are dense from 1 (a deleted event leaves a hole, reordered ones break the order);
* each event hashes to the leaf the ledger stored for its position (an edited, deleted,
  reordered or replaced event is named by its position);
* the store is not shorter than the ledger (a truncated store names the first missing one);
* the root recomputed at each signed checkpoint's size is the signed root, and every stored
  checkpoint's signature verifies (catches a ledger rebuilt from a tampered store: then the
  first bad position lies after the last checkpoint that still matches).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from casetrail_platform.ledger.merkle import HASH_SIZE, Hash, SubtreeKey, parents, root_at
from casetrail_platform.ledger.note import Checkpoint, NoteError, Verifier, open_checkpoint
from casetrail_platform.ledger.port import LedgerStore

BATCH = 20_000


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
    verifier: Verifier | None,
    *,
    trusted: Sequence[Checkpoint] = (),
    progress: Callable[[int], Awaitable[None] | None] | None = None,
) -> StoreVerification:
    """``trusted``: checkpoints kept elsewhere (by audit, or taken from the Kafka topic), so
    that a ledger rebuilt together with its checkpoints is caught too."""
    result = StoreVerification(ledger_size=await ledger.size())
    signed = await _checkpoints(ledger, verifier, result)
    # At equal sizes the outside checkpoints go first: they are the ones to trust.
    tagged = [(c.size, 0, c) for c in trusted] + [(c.size, 1, c) for c in signed]
    tagged.sort(key=lambda item: (item[0], item[1]))
    leaves: list[Hash] = []
    expected = 1
    while True:
        batch = await ledger.store_leaves(expected - 1, BATCH)
        if not batch:
            break
        count = len(batch)
        if batch[0][0] != expected or batch[-1][0] != expected + count - 1:
            # Positions come sorted and unique: a hole shows as a jump.
            missing = next(
                expected + offset
                for offset, (position, _) in enumerate(batch)
                if position != expected + offset
            )
            result.leaves = len(leaves)
            result.fail(missing, f"position {missing} is missing from the store")
            return result
        hashed = [leaf for _, leaf in batch]
        stored = await ledger.leaf_hash_bytes(expected - 1, count)
        if stored != b"".join(hashed)[: len(stored)]:
            offset = next(
                i
                for i, leaf in enumerate(hashed)
                if leaf != stored[i * HASH_SIZE : (i + 1) * HASH_SIZE]
            )
            result.leaves = len(leaves) + offset
            result.fail(
                expected + offset,
                f"the event at position {expected + offset} does not hash to the ledger's"
                " leaf (edited, replaced or moved)",
            )
            return result
        leaves.extend(hashed)
        expected += count
        if progress is not None:
            outcome = progress(len(leaves))
            if outcome is not None:
                await outcome
    result.leaves = len(leaves)
    _check_roots(leaves, tagged, trusted_given=bool(trusted), result=result)
    if result.ok and len(leaves) < result.ledger_size:
        result.fail(
            len(leaves) + 1,
            f"the store ends at position {len(leaves)} but the ledger holds"
            f" {result.ledger_size} events",
        )
    elif result.ok and len(leaves) > result.ledger_size:
        result.notes.append(
            f"{len(leaves) - result.ledger_size} events are not hashed into the ledger yet"
        )
    return result


def _check_roots(
    leaves: list[Hash],
    tagged: list[tuple[int, int, Checkpoint]],
    *,
    trusted_given: bool,
    result: StoreVerification,
) -> None:
    """The root of the recomputed leaves at each checkpoint's size must be the signed one."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        levels.append(parents(levels[-1]))

    def source(keys: Iterable[SubtreeKey]) -> dict[SubtreeKey, Hash]:
        return {(lvl, index): levels[lvl][index] for lvl, index in keys}

    # With outside checkpoints, only they vouch for a prefix: the log's own may be forged.
    last_matching = 0
    for size, kind, checkpoint in tagged:
        if size > len(leaves):
            first = last_matching + 1 if kind == 0 else len(leaves) + 1
            result.fail(
                first,
                f"the store ends at position {len(leaves)} but a checkpoint of {size} events"
                f" was signed; the first bad position is between {first} and"
                f" {len(leaves) + 1}",
            )
            return
        if root_at(size, source) != checkpoint.root:
            result.fail(
                last_matching + 1,
                f"the tree of the first {size} events is not the one signed; the first bad"
                f" position is between {last_matching + 1} and {size}",
            )
            return
        if kind == 0 or not trusted_given:
            last_matching = size
        result.checkpoints_checked += 1


async def _checkpoints(
    ledger: LedgerStore, verifier: Verifier | None, result: StoreVerification
) -> list[Checkpoint]:
    """Every stored checkpoint, opened (signature checked when a verifier is known)."""
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
