"""A service's transparency log: follows its event store, signs checkpoints, answers proofs.

``LedgerLog.catch_up`` hashes events appended since the ledger's size (leaf i = position i + 1)
and stores the leaves and the subtrees they complete; it runs behind the command path, like a
projection, so appends never wait for hashing. ``sign`` signs a checkpoint of the current tree,
but only after checking that the tree still extends the last checkpoint signed (and that the
event store still holds what the ledger hashed last): a log never signs two inconsistent
checkpoints, and a store changed under the ledger stops it with ``LedgerTampered``. Before its
first signature a process checks the tree against the newest checkpoint published outside the
database (``publish_to``), which a rollback of the database while it was down cannot erase.

A checkpoint is published to that record before it is stored (and so before anyone can fetch
it from the ledger): a checkpoint that counts as signed is always in the record, so the mark
read back on restart is never behind one the log handed out. A publication that fails leaves
the note pending: each later round (``sign``) publishes that same note again, before signing
anything else, until the record takes it; only then is it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.keys import CheckpointSigner, handover_note
from casetrail_platform.ledger.merkle import Hash, RootAccumulator, SubtreeKey
from casetrail_platform.ledger.note import Checkpoint, NoteError, Verifier, open_checkpoint
from casetrail_platform.ledger.port import (
    CheckpointRecord,
    LedgerConflict,
    LedgerStore,
    StoredCheckpoint,
)

log = logging.getLogger(__name__)

BATCH = 5000


class LedgerTampered(RuntimeError):
    """The event store no longer holds what the ledger hashed, or the ledger no longer extends
    a checkpoint it signed. ``position`` is the first position known to be bad (0: unknown)."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.position = position


class HandoverRefused(RuntimeError):
    """A key rotation the log cannot make now (nothing new to sign at, another signer)."""


class CheckpointNotPublished(RuntimeError):
    """A checkpoint was signed but its record (the checkpoints topic, the file beside the key)
    did not take it: it is neither stored nor exposed, and is published again next round."""


@dataclass(frozen=True, slots=True)
class InclusionProof:
    position: int
    leaf_hash: Hash
    tree_size: int
    hashes: list[Hash]


class LedgerLog:
    def __init__(self, store: LedgerStore, signer: CheckpointSigner) -> None:
        self.store = store
        self.signer = signer
        self.origin = signer.name
        self._frontier: RootAccumulator | None = None
        self._last_leaf: Hash | None = None
        self._lock = asyncio.Lock()
        self._signed: Checkpoint | None = None
        """The newest checkpoint this process signed or found signed: a ledger table rolled
        back behind it (rows deleted with the database's rights, no key needed) is caught
        here for as long as the process runs; across a restart, by ``check_published``."""
        self._record: CheckpointRecord | None = None
        self._published: Checkpoint | None = None
        self._recalled = False
        self._published_checked = False
        self._unrecorded: tuple[Checkpoint, StoredCheckpoint] | None = None
        """Signed, but its publication to the record failed (it may have reached it all the
        same): published again, before anything else is signed, until the record takes it."""
        self._stored_recorded = False

    def publish_to(self, record: CheckpointRecord) -> None:
        """Publish every checkpoint signed to ``record`` before storing it and, before the
        first signature of this process, check the tree against the newest one published
        there."""
        self._record = record

    async def check_published(self, size: int) -> None:
        """Before this process signs anything, the tree of ``size`` leaves must extend the
        newest checkpoint the log published: its tables rolled back while it was down (rows
        deleted, an older backup restored: the database's rights suffice, no key needed)
        would otherwise be hashed again and a second checkpoint of a size already signed
        signed under the same key, a fork. Tables emptied over an intact store hash back to
        the same tree and pass. The record read failing (unreachable, too slow) raises: the
        caller tries again later, and nothing is signed blind meanwhile."""
        if self._record is None or self._published_checked:
            return
        async with self._lock:
            if not self._recalled:
                self._published = await self._record.newest(await self.signer.verifier())
                self._recalled = True
            mark = self._published
            if mark is not None:
                await self._require_extends(
                    mark,
                    size,
                    f"the checkpoint of size {mark.size} it published",
                    shorter=f"the ledger holds {size} events but published a checkpoint of"
                    f" size {mark.size}; refusing to sign",
                )
                log.info("%s: the ledger extends its published checkpoint", self.origin)
            self._published_checked = True

    async def verifier(self) -> Verifier:
        return await self.signer.verifier()

    async def size(self) -> int:
        return await self.store.size()

    async def _load_frontier(self) -> tuple[RootAccumulator, Hash | None]:
        """The tree's right edge and its last leaf, as the ledger stores them."""
        size = await self.store.size()
        keys = RootAccumulator.resume(size, [b""] * bin(size).count("1")).completed()
        known = await self.store.subtrees([*keys, (0, size - 1)] if size else keys)
        frontier = RootAccumulator.resume(size, [known[key] for key in keys])
        return frontier, known[(0, size - 1)] if size else None

    async def catch_up(self) -> int:
        """Hash every event the store holds beyond the ledger; returns the new size."""
        async with self._lock:
            while True:
                if self._frontier is None:
                    self._frontier, self._last_leaf = await self._load_frontier()
                frontier = self._frontier
                size = frontier.size
                # One query a round: the new events and, first, the one hashed last, which
                # must still hash to the ledger's last leaf (a store truncated and appended to
                # again differs there, or earlier).
                leaves = await self.store.store_leaves(max(size - 1, 0), BATCH + 1)
                if size:
                    if not leaves or leaves[0] != (size, self._last_leaf):
                        raise LedgerTampered(
                            f"{self.origin}: the event at position {size} is not the one the"
                            " ledger hashed",
                            size,
                        )
                    leaves = leaves[1:]
                if not leaves:
                    return size
                if leaves[-1][0] != size + len(leaves):
                    # Positions come sorted and unique: a hole shows as a jump.
                    expected = next(
                        size + 1 + offset
                        for offset, (position, _) in enumerate(leaves)
                        if position != size + 1 + offset
                    )
                    raise LedgerTampered(
                        f"{self.origin}: the event store has no position {expected}", expected
                    )
                runs = frontier.extend_levels([leaf for _, leaf in leaves])
                try:
                    await self.store.append(size, runs)
                except LedgerConflict:
                    self._frontier = None  # another writer went first: start from its size
                    if await self.store.size() < size:
                        raise LedgerTampered(
                            f"{self.origin}: the ledger shrank below the {size} leaves it held",
                            await self.store.size() + 1,
                        ) from None
                    continue
                except BaseException:
                    self._frontier = None
                    raise
                self._last_leaf = leaves[-1][1]

    async def root(self, size: int) -> Hash:
        return await root_of_log(self.store, size)

    async def _check_last_leaf(self, size: int) -> None:
        """Before extending the tree: the event at position ``size`` is still the one hashed
        (a store truncated and appended to again differs there, or earlier)."""
        if size == 0:
            return
        [(position, leaf)] = await self.store.store_leaves(size - 1, 1)
        stored_leaves = await self.store.leaf_hashes(size - 1, 1)
        if not stored_leaves:
            raise LedgerTampered(
                f"{self.origin}: the ledger no longer holds the {size} leaves it held",
                await self.store.size() + 1,
            )
        [stored] = stored_leaves
        if position != size or leaf != stored:
            raise LedgerTampered(
                f"{self.origin}: the event at position {size} is not the one the ledger hashed",
                size,
            )

    async def check_store_tail(self, size: int) -> None:
        """The event at position ``size`` must still hash to the ledger's last leaf, and the
        store must not be shorter than the ledger: a cheap guard run before every signature
        against a store truncated or rewritten behind the ledger's back."""
        if size == 0:
            return
        last = await self.store.store_last_position()
        if last < size:
            raise LedgerTampered(
                f"{self.origin}: the event store ends at position {last} but the ledger holds"
                f" {size} events",
                last + 1,
            )
        await self._check_last_leaf(size)

    async def sign(self) -> StoredCheckpoint:
        """Catch up, then sign a checkpoint of the whole tree (or return the latest if the
        tree has not grown)."""
        size = await self.catch_up()
        await self.check_published(size)
        async with self._lock:
            await self._record_unrecorded(size)
            latest = await self.store.latest_checkpoint()
            verifier = await self.signer.verifier()
            if latest is not None and size < latest.size <= await self.store.size():
                # Another replica hashed and signed past this one's catch-up: its checkpoint
                # is the newest (it checked the tree before signing), not a sign of tampering.
                self._signed = self._own(latest, verifier)
                return latest
            held = await self._held_and_extended(latest, verifier, size)
            if latest is not None and held is not None and size == held.size:
                await self.check_store_tail(size)
                self._signed = held
                return latest
            await self.check_store_tail(size)
            checkpoint = Checkpoint(self.origin, size, await self.root(size))
            note = await self.signer.sign_checkpoint(checkpoint)
            self._unrecorded = (checkpoint, StoredCheckpoint(size, note))
            return await self._record_and_store(*self._unrecorded)

    async def hand_over(self, new_signer: CheckpointSigner) -> StoredCheckpoint:
        """Rotate the log's key: catch up, run the checks run before any signature (store
        tail, extends the held checkpoint and the published mark), sign the tree of its size
        N with the log's key **and** ``new_signer``'s (one note, two signature lines), publish
        it, store it, and only then sign with the new key. The new key's first checkpoint is
        the old key's last, so nothing is signed by the new key that the old one did not
        vouch for, and the mark and the refusal to fork carry across (``_own`` and the
        record's ``newest`` find the new key's signature on it). N must be a size no
        checkpoint has: one the old key alone signed would not verify under the keys file's
        schedule, which wants both at N (``note.KeySchedule``)."""
        size = await self.catch_up()
        await self.check_published(size)
        async with self._lock:
            await self._record_unrecorded(size)
            old = await self.signer.verifier()
            new = await new_signer.verifier()
            if new.name != self.origin:
                raise ValueError(f"the new key signs {new.name!r}, not {self.origin!r}")
            if new.public_key == old.public_key:
                raise ValueError(f"{self.origin}: the new key is the log's key")
            latest = await self.store.latest_checkpoint()
            held = await self._held_and_extended(latest, old, size)
            if held is not None and size == held.size:
                raise HandoverRefused(
                    f"{self.origin}: no event since the checkpoint of size {size}: the"
                    " handover checkpoint must be of a new size (signed by both keys),"
                    " so rotate once the log has grown"
                )
            if size == 0:
                raise HandoverRefused(f"{self.origin}: the log is empty: nothing to hand over")
            await self.check_store_tail(size)
            checkpoint = Checkpoint(self.origin, size, await self.root(size))
            note = await handover_note(checkpoint, self.signer, new_signer)
            self._unrecorded = (checkpoint, StoredCheckpoint(size, note))
            try:
                kept = await self._record_and_store(*self._unrecorded)
            except BaseException:
                # Not retried by the old key's rounds: the rotation failed, as a whole.
                self._unrecorded = None
                raise
            if kept.note != note:
                # Another replica signed this size with the old key alone first.
                raise HandoverRefused(
                    f"{self.origin}: another process signed the size {size} meanwhile; rotate"
                    " with every other process of the service stopped"
                )
            self.signer = new_signer
            log.info("%s: signing key handed over at size %d", self.origin, size)
            return kept

    async def _held_and_extended(
        self, latest: StoredCheckpoint | None, verifier: Verifier, size: int
    ) -> Checkpoint | None:
        """The checks run before any signature over the tree of ``size`` leaves (under the
        lock): the newest stored checkpoint is the log's own, the tree was not rolled back
        past the published mark, and it extends the held checkpoint, whose record is then
        made whole. Returns that held checkpoint (``None``: the log has none yet)."""
        held = None if latest is None else self._own(latest, verifier)
        await self._check_not_rolled_back(held, size)
        if latest is not None and held is not None:
            await self._require_extends(
                held,
                size,
                f"its checkpoint of size {held.size}",
                shorter=f"the ledger holds {size} events but signed {held.size}",
            )
            await self._record_stored(held, latest)
        return held

    def _own(self, stored: StoredCheckpoint, verifier: Verifier) -> Checkpoint:
        """The table's newest checkpoint, which this log's key must have signed: else it was
        written there without the key (or the key was replaced), and signing over it would
        vouch for a tree nobody checked. A bare ``NoteError`` said neither."""
        try:
            return open_checkpoint(stored.note, verifier)
        except NoteError as error:
            raise LedgerTampered(
                f"{self.origin}: the ledger's newest checkpoint (size {stored.size}) is not"
                f" signed by the log's key ({error}): written into its table without the key,"
                " or the key was replaced; refusing to sign"
            ) from None

    async def _record_unrecorded(self, size: int) -> None:
        """Publish and store the checkpoint whose publication failed, if any (under the lock),
        provided the tree of ``size`` leaves still extends it."""
        if self._unrecorded is None:
            return
        checkpoint, unrecorded = self._unrecorded
        await self._require_extends(
            checkpoint,
            size,
            f"the checkpoint of size {checkpoint.size} it signed and is publishing",
        )
        await self._record_and_store(checkpoint, unrecorded)

    async def _record_and_store(
        self, checkpoint: Checkpoint, unrecorded: StoredCheckpoint
    ) -> StoredCheckpoint:
        """The record first, then the store (under the lock): a failure to publish raises and
        leaves ``_unrecorded`` set, so that nothing counts as signed outside the record and the
        same note is published again on the next round, ahead of any newer one."""
        await self._publish(checkpoint, unrecorded)
        self._unrecorded = None
        await self.store.save_checkpoint(unrecorded)
        # Another replica may have signed this size first: its note is the one kept.
        kept = await self.store.checkpoints(after_size=checkpoint.size - 1, limit=1)
        self._signed = checkpoint
        return kept[0] if kept else unrecorded

    async def _record_stored(self, checkpoint: Checkpoint, stored: StoredCheckpoint) -> None:
        """Once a process, before it signs: the table's newest checkpoint, if larger than the
        record's mark read on start, is published. Versions before this one stored first and
        only logged a failed publication, leaving signed checkpoints outside the record; now
        every stored one was recorded first, and a replica's own mark is only read once, so
        later checkpoints of other replicas are not published twice."""
        if self._stored_recorded:
            return
        mark = self._published
        if self._record is not None and (mark is None or mark.size < checkpoint.size):
            log.info("%s: publishing the stored checkpoint the record lacks", self.origin)
            await self._publish(checkpoint, stored)
        self._stored_recorded = True

    async def _publish(self, checkpoint: Checkpoint, stored: StoredCheckpoint) -> None:
        if self._record is None:
            return
        try:
            await self._record.publish(stored)
        except Exception as error:
            raise CheckpointNotPublished(
                f"{self.origin}: the checkpoint of size {checkpoint.size} could not be"
                f" published ({type(error).__name__}: {error}); it is published again"
                " before anything else is signed"
            ) from error
        if self._published is None or self._published.size < checkpoint.size:
            self._published = checkpoint

    async def _check_not_rolled_back(self, held: Checkpoint | None, size: int) -> None:
        """The table's newest checkpoint and the tree must still extend the newest one this
        process signed or found: else the ledger was rolled back (rows deleted) behind it."""
        mark = self._signed
        if mark is None:
            return
        if held is None or held.size < mark.size:
            raise LedgerTampered(
                f"{self.origin}: the ledger's checkpoints were rolled back: this process saw one"
                f" of size {mark.size}, the table's newest is of size"
                f" {0 if held is None else held.size}; refusing to sign",
                0 if held is None else held.size + 1,
            )
        await self._require_extends(
            mark, size, f"the checkpoint of size {mark.size} this process saw"
        )

    async def _require_extends(
        self, mark: Checkpoint, size: int, which: str, *, shorter: str | None = None
    ) -> None:
        """The tree of ``size`` leaves must extend ``mark`` (``which`` checkpoint it is, in the
        refusal), else ``LedgerTampered``; with ``shorter``, a tree shorter than the mark is
        refused in those words at its first missing position."""
        if shorter is not None and size < mark.size:
            raise LedgerTampered(f"{self.origin}: {shorter}", size + 1)
        if size < mark.size or await self.root(mark.size) != mark.root:
            raise LedgerTampered(
                f"{self.origin}: the ledger no longer extends {which}; refusing to sign"
            )

    async def latest(self) -> StoredCheckpoint | None:
        return await self.store.latest_checkpoint()

    async def inclusion_proof(self, position: int, tree_size: int) -> InclusionProof:
        return await prove_inclusion(self.store, position, tree_size)

    async def consistency_proof(self, old_size: int, size: int) -> list[Hash]:
        return await prove_consistency(self.store, old_size, size)

    async def run(
        self,
        wait_for_append: Callable[[int, float], Awaitable[None]],
        stop: asyncio.Event,
        *,
        sign_every: float = 60.0,
        linger: float = 0.25,
        on_error: Callable[[Exception], Awaitable[None]] | None = None,
        on_resumed: Callable[[], Awaitable[None]] | None = None,
        retry_after: float = 5.0,
    ) -> None:
        """Follow the event store until ``stop``: hash new events as they arrive and sign a
        checkpoint every ``sign_every`` seconds when the tree has grown. After a failure
        (``on_error``) it tries again every ``retry_after`` seconds, and calls ``on_resumed``
        when a later round succeeds."""
        loop = asyncio.get_running_loop()
        next_signature = loop.time()
        failing = False
        while not stop.is_set():
            try:
                size = await self.catch_up()
                # At once, even with nothing to sign: a rolled-back store is reported on start.
                await self.check_published(size)
                if size and loop.time() >= next_signature:
                    await self.sign()
                    next_signature = loop.time() + sign_every
            except Exception as error:
                log.error("%s: ledger stopped: %s", self.origin, error)
                failing = True
                if on_error is not None:
                    await on_error(error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_after)
                continue
            if failing:
                failing = False
                log.info("%s: ledger follows the store again", self.origin)
                if on_resumed is not None:
                    await on_resumed()
            wait = max(0.0, min(1.0, next_signature - loop.time()))
            waiting = asyncio.ensure_future(wait_for_append(size, wait))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in (waiting, stopping):
                task.cancel()
            # Let more appends arrive: one ledger round then covers many events. A round has
            # a fixed cost (a query, a transaction, waking threads) that at one event per
            # commit outweighed the hashing; a quarter second behind costs nothing, since
            # nothing is provable before the next checkpoint anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), linger)
        with contextlib.suppress(Exception):
            await self.catch_up()  # what was stored before the stop


async def prove_inclusion(
    store: LedgerStore,
    position: int,
    tree_size: int,
    known: Mapping[SubtreeKey, Hash] | None = None,
) -> InclusionProof:
    """The proof that the event at ``position`` is in the tree of ``tree_size`` events.
    ``known``: the subtrees ``inclusion_subtrees_of`` read for several events at once."""
    if not 1 <= position <= tree_size:
        raise merkle.ProofError(f"position {position} is not in a tree of size {tree_size}")
    keys = [*merkle.inclusion_subtrees(position - 1, tree_size), (0, position - 1)]
    if known is None:
        # One read: the ledger's size is asked only when a hash is missing, to say why.
        known = await inclusion_subtrees_of(store, [position], tree_size)
    if any(key not in known for key in keys):
        size = await store.size()
        if tree_size > size:
            raise merkle.ProofError(
                f"tree size {tree_size} is beyond the ledger's current size {size}"
            )
    source = known
    hashes = merkle.inclusion_proof(position - 1, tree_size, lambda _: source)
    return InclusionProof(position, known[(0, position - 1)], tree_size, hashes)


async def inclusion_subtrees_of(
    store: LedgerStore, positions: Sequence[int], tree_size: int
) -> dict[SubtreeKey, Hash]:
    """Every stored subtree the inclusion proofs of ``positions`` in the tree of ``tree_size``
    events read, in one read: proofs of many events share most of theirs (an export)."""
    keys = (
        key
        for position in positions
        if 1 <= position <= tree_size
        for key in (*merkle.inclusion_subtrees(position - 1, tree_size), (0, position - 1))
    )
    return dict(await store.subtrees(keys))


async def prove_consistency(store: LedgerStore, old_size: int, size: int) -> list[Hash]:
    """The proof that the tree of ``size`` events extends the one of ``old_size``."""
    merkle.check_sizes(old_size, size)
    current = await store.size()
    if size > current:
        raise merkle.ProofError(f"tree size {size} is beyond the ledger's current size {current}")
    known = dict(await store.subtrees(merkle.consistency_subtrees(old_size, size)))
    return merkle.consistency_proof(old_size, size, lambda _: known)


async def root_of_log(store: LedgerStore, size: int) -> Hash:
    known = dict(await store.subtrees(merkle.subtree_keys(0, size)))
    return merkle.root_at(size, lambda _: known)
