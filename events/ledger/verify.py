"""Recompute a store's tree from its events and name the first position that is wrong.

``verify_store`` reads every stored event once, hashes it by the canonical encoding, and checks
(in one pass, constant memory) that:

* positions are dense from 1 (a deleted event leaves a hole, reordered ones break the order);
* each event hashes to the leaf the ledger stored for its position (an edited, deleted,
  reordered or replaced event is named by its position);
* the store is not shorter than the ledger (a truncated store names the first missing one);
* the root recomputed at each signed checkpoint's size is the signed root, and every stored
  checkpoint's signature verifies (catches a ledger rebuilt from a tampered store: then the
  first bad position lies after the last checkpoint that still matches).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from events.ledger.merkle import RootAccumulator
from events.ledger.note import Checkpoint, NoteError, Verifier, open_checkpoint
from events.ledger.port import LedgerStore

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
    stored = await _checkpoints(ledger, verifier, result)
    # At equal sizes the outside checkpoints go first: they are the ones to trust.
    tagged = [(c.size, 0, c) for c in trusted] + [(c.size, 1, c) for c in stored]
    tagged.sort(key=lambda item: (item[0], item[1]))
    pending = iter([(checkpoint, kind == 0) for _, kind, checkpoint in tagged])
    next_checkpoint, next_trusted = next(pending, (None, False))
    # With outside checkpoints, only they vouch for a prefix: the log's own may be forged.
    last_matching = 0
    accumulator = RootAccumulator()
    expected = 1
    while True:
        batch = await ledger.store_leaves(expected - 1, BATCH)
        if not batch:
            break
        hashed = await ledger.leaf_hashes(expected - 1, len(batch))
        for offset, (position, leaf) in enumerate(batch):
            if position != expected:
                result.fail(
                    expected,
                    f"position {expected} is missing (the next stored event has position"
                    f" {position})",
                )
                return result
            if offset < len(hashed) and hashed[offset] != leaf:
                result.fail(
                    position,
                    f"the event at position {position} does not hash to the ledger's leaf"
                    " (edited, replaced or moved)",
                )
                return result
            accumulator.append(leaf)
            while next_checkpoint is not None and next_checkpoint.size == accumulator.size:
                if accumulator.root() != next_checkpoint.root:
                    result.fail(
                        last_matching + 1,
                        f"the tree of the first {next_checkpoint.size} events is not the one"
                        f" signed; the first bad position is between {last_matching + 1} and"
                        f" {next_checkpoint.size}",
                    )
                    return result
                if next_trusted or not trusted:
                    last_matching = next_checkpoint.size
                result.checkpoints_checked += 1
                next_checkpoint, next_trusted = next(pending, (None, False))
            expected += 1
        result.leaves = accumulator.size
        if progress is not None:
            outcome = progress(accumulator.size)
            if outcome is not None:
                await outcome
    result.leaves = accumulator.size
    if accumulator.size < result.ledger_size:
        result.fail(
            accumulator.size + 1,
            f"the store ends at position {accumulator.size} but the ledger holds"
            f" {result.ledger_size} events",
        )
    elif next_checkpoint is not None:
        first = last_matching + 1 if next_trusted else accumulator.size + 1
        result.fail(
            first,
            f"the store ends at position {accumulator.size} but a checkpoint of"
            f" {next_checkpoint.size} events was signed; the first bad position is between"
            f" {first} and {accumulator.size + 1}",
        )
    elif accumulator.size > result.ledger_size:
        result.notes.append(
            f"{accumulator.size - result.ledger_size} events are not hashed into the ledger yet"
        )
    return result


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
