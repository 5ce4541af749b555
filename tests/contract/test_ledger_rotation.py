"""Rotating a log's signing key (README "Rotating a log's signing key"), on SQLite and
PostgreSQL: one handover checkpoint signed by both keys, then the new key; verify-store and
the witness open each checkpoint under the key valid for its size, and still alarm on a note
of a key not valid for it or on a tree that does not extend the held one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import HandoverRefused, LedgerLog
from casetrail_platform.ledger.note import (
    Checkpoint,
    KeySchedule,
    open_checkpoint,
    origin_of,
    parse_verifiers,
)
from casetrail_platform.ledger.port import LedgerStore, StoredCheckpoint
from casetrail_platform.ledger.verify import verify_store
from casetrail_platform.ledger.witness import Witness, WitnessAlarm
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import EventStore
from tests.support.ledger import append_notes, open_ledger

ORIGIN = origin_of("test-agency", "test")
AT = "2026-12-05T02:00:00Z"


@dataclass
class Rotated:
    store: EventStore
    ledger: LedgerStore
    old: FileSigner
    new: FileSigner
    log: LedgerLog
    witness: Witness
    alarms: list[WitnessAlarm]

    async def schedule(self, handover: int) -> KeySchedule:
        text = f"{await self.old.verifier()}\n{await self.new.verifier()} from={handover} at={AT}"
        return parse_verifiers(text)[ORIGIN]

    async def witnessed(self, keys: KeySchedule) -> WitnessAlarm | None:
        async def raised(alarm: WitnessAlarm) -> None:
            self.alarms.append(alarm)

        return await self.witness.witness(self.ledger, keys, raised)

    async def held(self, size: int, handover: int, *, handing_over: bool = False) -> KeySchedule:
        """``size`` events signed by the old key (or handed over at ``size``) and that
        checkpoint held by the witness; the schedule of the new key from ``handover``."""
        await append_notes(self.store, size)
        await (self.log.hand_over(self.new) if handing_over else self.log.sign())
        keys = await self.schedule(handover)
        assert await self.witnessed(keys) is None
        return keys

    async def grow(self, count: int) -> None:
        """``count`` events more, in the log's tree but under no checkpoint yet."""
        await append_notes(self.store, count)
        await self.log.catch_up()

    async def forge(self, size: int, signer: FileSigner) -> None:
        """A checkpoint of the log's true tree of ``size`` signed by ``signer`` (a retired key
        stolen, say), written into the table as the log would."""
        checkpoint = Checkpoint(ORIGIN, size, await self.log.root(size))
        await self.ledger.save_checkpoint(
            StoredCheckpoint(size, await signer.sign_checkpoint(checkpoint))
        )

    async def alarmed(self, keys: KeySchedule) -> WitnessAlarm:
        alarm = await self.witnessed(keys)
        assert alarm is not None
        return alarm


@pytest.fixture
async def rotating(event_store: EventStore, tmp_path: Path) -> AsyncIterator[Rotated]:
    ledger = await open_ledger(event_store, tmp_path)
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    old = FileSigner(ORIGIN, tmp_path / "keys" / "old.key")
    new = FileSigner(ORIGIN, tmp_path / "keys" / "new.key")
    yield Rotated(event_store, ledger, old, new, LedgerLog(ledger, old), Witness(documents), [])
    await documents.close()
    await ledger.close()


async def test_a_log_hands_over_its_key_and_every_verifier_follows(rotating: Rotated) -> None:
    r = rotating
    keys = await r.held(5, 8)  # the witness holds the old key's checkpoint of 5
    await append_notes(r.store, 3)

    handover = await r.log.hand_over(r.new)

    assert handover.size == 8
    assert handover.note.count("\n\u2014 ") == 2  # one body, two signature lines
    for verifier in (await r.old.verifier(), await r.new.verifier()):
        assert open_checkpoint(handover.note, verifier).size == 8  # as Go's note.Open
    assert r.log.signer is r.new
    await append_notes(r.store, 4)
    after = await r.log.sign()
    assert after.size == 12
    assert open_checkpoint(after.note, keys).size == 12
    # A process started on the new key finds its signature on the handover and goes on.
    await append_notes(r.store, 1)
    restarted = LedgerLog(r.ledger, r.new)
    assert (await restarted.sign()).size == 13

    checked = await verify_store(r.ledger, keys)
    assert checked.ok, checked.problem
    assert checked.checkpoints_checked == 4
    assert await r.witnessed(keys) is None
    held = await r.witness.held(ORIGIN)
    assert held is not None
    assert held.size == 13
    assert r.alarms == []
    # The old key alone, as before rotation, does not take the new key's notes.
    assert not (await verify_store(r.ledger, await r.old.verifier())).ok


async def test_a_retired_key_cannot_extend_the_log(rotating: Rotated) -> None:
    r = rotating
    keys = await r.held(5, 5, handing_over=True)
    await r.grow(2)
    await r.forge(7, r.old)  # the retired key (stolen, say) signs the next tree

    checked = await verify_store(r.ledger, keys)
    assert not checked.ok
    assert "signed by a key not valid for size 7" in (checked.problem or "")
    alarm = await r.alarmed(keys)
    assert "signed by a key not valid for size 7" in alarm.problem
    assert r.alarms == [alarm]


async def test_a_new_key_cannot_sign_below_its_handover(rotating: Rotated) -> None:
    r = rotating
    keys = await r.held(5, 9)
    await r.grow(2)
    await r.forge(7, r.new)

    assert "not valid for size 7" in ((await verify_store(r.ledger, keys)).problem or "")
    assert "signed by a key not valid for size 7" in (await r.alarmed(keys)).problem


async def test_an_inconsistent_tree_across_the_handover_still_alarms(rotating: Rotated) -> None:
    r = rotating
    keys = await r.held(5, 8)
    await r.grow(3)
    # Both keys sign a tree of 8 that does not extend the held one of 5.
    forged = Checkpoint(ORIGIN, 8, b"\x07" * 32)
    body = forged.body()
    note = body + "\n" + (await r.old.sign_note(body)).rpartition("\n\n")[2]
    note += (await r.new.sign_note(body)).rpartition("\n\n")[2]
    assert open_checkpoint(note, keys).size == 8  # the signatures are good
    await r.ledger.save_checkpoint(StoredCheckpoint(8, note))

    assert "not consistent with the held one of 5" in (await r.alarmed(keys)).problem
    assert not (await verify_store(r.ledger, keys)).ok


async def test_a_handover_needs_a_new_size_and_a_new_key(rotating: Rotated, tmp_path: Path) -> None:
    r = rotating
    with pytest.raises(HandoverRefused, match="empty"):
        await r.log.hand_over(r.new)
    await append_notes(r.store, 3)
    signed = await r.log.sign()
    with pytest.raises(HandoverRefused, match="no event since the checkpoint of size 3"):
        await r.log.hand_over(r.new)
    with pytest.raises(ValueError, match="the new key is the log's key"):
        await r.log.hand_over(r.old)
    stranger = FileSigner(origin_of("test-agency", "other"), tmp_path / "keys" / "other.key")
    with pytest.raises(ValueError, match="the new key signs"):
        await r.log.hand_over(stranger)
    assert r.log.signer is r.old
    assert await r.ledger.latest_checkpoint() == signed
