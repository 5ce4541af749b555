"""A witness of other logs: checks every new checkpoint against the last one it holds.

For each log it watches, the witness keeps the last checkpoint it accepted, the right edge of
that tree (O(log n) hashes) and a copy of every leaf hash it accepted (32 bytes per event, in
chunks). A new checkpoint is accepted only if

* its signature verifies with the log's published key valid for its size (a schedule of keys:
  both keys at their handover size) and its origin is the log's;
* it is not smaller than the one held (a log never shrinks: one whose table holds no
  checkpoint any more shrank to 0);
* of the held size, it is the held note itself (the table keeps the first note stored for a
  size: a rewritten one, even one that still verifies, was written without the log);
* the log's consistency proof from the held checkpoint verifies (RFC 9162);
* the log's new leaves, appended to the held tree's right edge, give exactly the signed root
  (so the witness's own leaf copy stays a faithful prefix of the log).

Otherwise the witness raises an alarm naming the first bad position when it can: the first
position where the log's leaves now differ from the copy the witness accepted earlier (a leaf
edited, deleted, reordered or replaced by a rebuilt ledger), or the first missing one. The
alarm is kept until the log is consistent again, and is raised once per bad checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from casetrail_platform.ledger import merkle
from casetrail_platform.ledger.merkle import HASH_SIZE, Hash, RootAccumulator
from casetrail_platform.ledger.note import Checkpoint, LogKeys, NoteError, open_checkpoint
from casetrail_platform.ledger.port import LedgerStore, StoredCheckpoint
from casetrail_platform.projections.port import ReadModelStore

HELD = "ledger_witness"
LEAVES = "ledger_witness_leaves"
CHUNK = 1024


@dataclass(frozen=True, slots=True)
class WitnessAlarm:
    origin: str
    held_size: int
    checkpoint_size: int
    first_bad_position: int | None
    problem: str


@dataclass(frozen=True, slots=True)
class HeldCheckpoint:
    origin: str
    size: int
    root: Hash
    note: str


AlarmHandler = Callable[[WitnessAlarm], Awaitable[None]]

NO_CHECKPOINT = StoredCheckpoint(0, "")
"""A log's latest checkpoint when its table holds none: the empty tree, signed by nobody."""


class Witness:
    def __init__(self, documents: ReadModelStore) -> None:
        self._documents = documents
        self._lock = asyncio.Lock()
        """One check at a time in this process: the round and an export's own checkpoint."""

    async def held(self, origin: str) -> HeldCheckpoint | None:
        document = await self._documents.get(HELD, origin)
        if document is None or not document.get("size"):
            return None
        return HeldCheckpoint(
            origin, int(document["size"]), base64.b64decode(document["root"]), document["note"]
        )

    async def alarm(self, origin: str) -> WitnessAlarm | None:
        document = await self._documents.get(HELD, origin)
        if document is None or document.get("alarm") is None:
            return None
        return _alarm_of(document["alarm"])

    async def vanished(self, origin: str, on_alarm: AlarmHandler) -> WitnessAlarm | None:
        """The log of ``origin`` does not exist (its ledger file deleted, its schema dropped):
        ``None`` when the witness never held a checkpoint of it (not created yet), else the
        shrink alarm, raised once and standing until the log is back as it was witnessed."""
        async with self._lock:
            document = await self._documents.get(HELD, origin)
            if document is None or not document.get("size"):
                return None
            held_size = int(document["size"])
            alarm = WitnessAlarm(
                origin,
                held_size,
                0,
                1,
                f"the log shrank from {held_size} to 0 events (its ledger does not exist)",
            )
            standing = document.get("alarm")
            if standing is None or standing["checkpoint_size"] != 0:
                await on_alarm(alarm)  # told first, as in ``_witness``
                document["alarm"] = {**_alarm_document(alarm), "note": NO_CHECKPOINT.note}
                await self._save(document, [])
            return alarm

    async def witness(
        self, log: LedgerStore, verifier: LogKeys, on_alarm: AlarmHandler
    ) -> WitnessAlarm | None:
        """Check every checkpoint the log signed since the one held, in order. Returns the
        alarm raised (or still standing), ``None`` when the log is consistent."""
        async with self._lock:
            return await self._witness(log, verifier, on_alarm)

    async def _witness(
        self, log: LedgerStore, verifier: LogKeys, on_alarm: AlarmHandler
    ) -> WitnessAlarm | None:
        origin = verifier.name
        document = await self._documents.get(HELD, origin) or _empty(origin)
        standing = document.get("alarm")
        after = int(document["size"]) if document["size"] else -1
        while True:
            batch = await self._next_checkpoints(
                log, document, after, in_alarm=standing is not None
            )
            if not batch:
                if standing is None and document.get("alarm") is not None:
                    document["alarm"] = None  # the log is consistent again
                    await self._save(document, [])
                return None if standing is None else _alarm_of(standing)
            for stored in batch:
                alarm = await self._check(log, verifier, document, stored)
                if alarm is None:
                    standing = None
                    after = max(after, stored.size)
                    continue
                if standing is None or standing["checkpoint_size"] != alarm.checkpoint_size:
                    # Told first: an alarm saved as standing is not told again, so one whose
                    # telling failed (its event not stored) would never be recorded.
                    await on_alarm(alarm)
                    document["alarm"] = {**_alarm_document(alarm), "note": stored.note}
                    await self._save(document, [])
                return alarm

    @staticmethod
    async def _next_checkpoints(
        log: LedgerStore, document: dict[str, Any], after: int, *, in_alarm: bool
    ) -> list[StoredCheckpoint]:
        """The log's checkpoints beyond the held one, in order; or, when none is bigger, its
        latest if that is not the held note (a smaller or rewritten tree, or a rewritten note,
        must be looked at; ``NO_CHECKPOINT`` when the table holds none); under an alarm, also
        the held one come back."""
        if not in_alarm:
            batch = await log.checkpoints(after_size=after, limit=100)
            if batch:
                return batch
        latest = await log.latest_checkpoint()
        if latest is None:
            if after <= 0:
                return []
            latest = NO_CHECKPOINT  # the held checkpoint is gone: the log shrank to nothing
        if latest.note == document["note"]:
            # Back at the held checkpoint: under an alarm, checked so that the alarm clears.
            return [latest] if in_alarm else []
        if latest.size == after == 0:
            return []
        if in_alarm and latest.size == document["alarm"]["checkpoint_size"]:
            # The bad checkpoint is still the newest: nothing new to look at.
            return [latest] if latest.note != document["alarm"].get("note") else []
        return [latest]

    async def _check(
        self,
        log: LedgerStore,
        verifier: LogKeys,
        document: dict[str, Any],
        stored: StoredCheckpoint,
    ) -> WitnessAlarm | None:
        origin = verifier.name
        held_size = int(document["size"])
        held_root = base64.b64decode(document["root"]) if held_size else merkle.EMPTY_ROOT

        def alarm(problem: str, position: int | None, size: int) -> WitnessAlarm:
            return WitnessAlarm(origin, held_size, size, position, problem)

        if stored is NO_CHECKPOINT:
            checkpoint = Checkpoint(origin, 0, merkle.EMPTY_ROOT)
        else:
            try:
                checkpoint = open_checkpoint(stored.note, verifier)
            except NoteError as error:
                return alarm(f"checkpoint of size {stored.size}: {error}", None, stored.size)
        size = checkpoint.size
        if size < held_size:
            first = await self._first_difference(log, origin, held_size)
            gone = " (its table holds no checkpoint)" if stored is NO_CHECKPOINT else ""
            return alarm(
                f"the log shrank from {held_size} to {size} events{gone}",
                first if first is not None and first <= size else size + 1,
                size,
            )
        if size == held_size:
            if checkpoint.root != held_root:
                return alarm(
                    f"two different roots signed for {size} events (a fork)",
                    await self._first_difference(log, origin, held_size),
                    size,
                )
            if held_size and stored.note != document["note"]:
                # The same tree, but the table keeps the first note stored for a size: another
                # text (a line added or repeated, base64 re-encoded) was written without the log.
                return alarm(
                    f"the stored checkpoint of size {size} was rewritten: it verifies, but its"
                    " note is not the one witnessed",
                    None,
                    size,
                )
            return None
        try:
            keys = merkle.consistency_subtrees(held_size, size)
            known = dict(await log.subtrees(keys))
            proof = merkle.consistency_proof(held_size, size, lambda _: known)
            merkle.verify_consistency(held_size, size, held_root, checkpoint.root, proof)
        except (merkle.ProofError, LookupError) as error:
            return alarm(
                f"checkpoint of {size} events is not consistent with the held one of"
                f" {held_size}: {error}",
                await self._first_difference(log, origin, held_size),
                size,
            )
        new_leaves = await log.leaf_hashes(held_size, size - held_size)
        edge = [base64.b64decode(item) for item in document["edge"]]
        accumulator = RootAccumulator.resume(held_size, edge)
        accumulator.extend(new_leaves)
        if len(new_leaves) != size - held_size or accumulator.root() != checkpoint.root:
            return alarm(
                f"the log's leaves {held_size + 1}..{size} do not make the signed root",
                held_size + 1,
                size,
            )
        await self._accept(document, checkpoint, stored.note, accumulator, new_leaves)
        return None

    async def _accept(
        self,
        document: dict[str, Any],
        checkpoint: Checkpoint,
        note: str,
        accumulator: RootAccumulator,
        new_leaves: list[Hash],
    ) -> None:
        old_size = int(document["size"])
        edge = accumulator.edge()
        document.update(
            size=checkpoint.size,
            root=base64.b64encode(checkpoint.root).decode(),
            note=note,
            edge=[base64.b64encode(item).decode() for item in edge],
            alarm=None,
        )
        await self._save(document, new_leaves, old_size)

    async def _save(
        self, document: dict[str, Any], new_leaves: list[Hash], old_size: int = 0
    ) -> None:
        origin = document["origin"]
        async with self._documents.transaction() as transaction:
            index = old_size
            leaves = list(new_leaves)
            while leaves:
                chunk = index // CHUNK
                key = f"{origin}:{chunk:08d}"
                existing = await transaction.get(LEAVES, key)
                stored = base64.b64decode(existing["hashes"]) if existing else b""
                room = CHUNK - index % CHUNK
                taken, leaves = leaves[:room], leaves[room:]
                stored = stored[: (index % CHUNK) * HASH_SIZE] + b"".join(taken)
                await transaction.put(LEAVES, key, {"hashes": base64.b64encode(stored).decode()})
                index += len(taken)
            await transaction.put(HELD, origin, document)

    async def _first_difference(self, log: LedgerStore, origin: str, held_size: int) -> int | None:
        """The first position whose leaf in the log differs from the witnessed copy (or is
        missing from the log), among the ``held_size`` leaves witnessed."""
        for chunk in range((held_size + CHUNK - 1) // CHUNK):
            document = await self._documents.get(LEAVES, f"{origin}:{chunk:08d}")
            witnessed = base64.b64decode(document["hashes"]) if document else b""
            count = min(CHUNK, held_size - chunk * CHUNK)
            current = await log.leaf_hashes(chunk * CHUNK, count)
            for offset in range(count):
                mine = witnessed[offset * HASH_SIZE : (offset + 1) * HASH_SIZE]
                if offset >= len(current) or current[offset] != mine:
                    return chunk * CHUNK + offset + 1
        return None


def _empty(origin: str) -> dict[str, Any]:
    return {"origin": origin, "size": 0, "root": "", "note": "", "edge": [], "alarm": None}


def _alarm_document(alarm: WitnessAlarm) -> dict[str, Any]:
    return {
        "origin": alarm.origin,
        "held_size": alarm.held_size,
        "checkpoint_size": alarm.checkpoint_size,
        "first_bad_position": alarm.first_bad_position,
        "problem": alarm.problem,
    }


def _alarm_of(document: dict[str, Any]) -> WitnessAlarm:
    return WitnessAlarm(
        document["origin"],
        int(document["held_size"]),
        int(document["checkpoint_size"]),
        document["first_bad_position"],
        document["problem"],
    )
