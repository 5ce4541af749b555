"""The witness against a log's checkpoint table written with the database's rights alone (no
signing key): the held checkpoint's note rewritten so that it still verifies, or with bytes not
UTF-8, or the table and tiles emptied. Each is an alarm raised once, the round ends (it held
the witness's lock, so a round that never ended starved every other log), and the alarm clears
once the log is back at the checkpoint held."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerLog
from casetrail_platform.ledger.note import Verifier, open_checkpoint, origin_of
from casetrail_platform.ledger.sqlite import SqliteLedgerStore
from casetrail_platform.ledger.witness import Witness, WitnessAlarm
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.support.ledger import append_notes, wipe_ledger
from tests.support.sample_events import sample_registry

HELD = 5


@dataclass
class Witnessed:
    tmp_path: Path
    store: SqliteEventStore
    ledger: SqliteLedgerStore
    signer: FileSigner
    verifier: Verifier
    witness: Witness
    note: str
    """The note of the checkpoint the witness holds."""
    alarms: list[WitnessAlarm] = field(default_factory=list)

    async def round(self) -> WitnessAlarm | None:
        async def raised(alarm: WitnessAlarm) -> None:
            self.alarms.append(alarm)

        # Bounded: a round that does not end is the failure looked for.
        return await asyncio.wait_for(self.witness.witness(self.ledger, self.verifier, raised), 5)

    def set_note(self, note: str) -> None:
        db = sqlite3.connect(self.tmp_path / "ledger.db", isolation_level=None)
        db.execute("UPDATE ledger_checkpoints SET note = ? WHERE size = ?", (note, HELD))
        db.close()


@pytest.fixture
async def witnessed(tmp_path: Path) -> AsyncIterator[Witnessed]:
    """A log of ``HELD`` events, signed and witnessed."""
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    ledger = await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    signer = FileSigner(origin_of("agency", "intake"), tmp_path / "keys" / "intake.key")
    try:
        await append_notes(store, HELD)
        note = (await LedgerLog(ledger, signer).sign()).note
        verifier = await signer.verifier()
        state = Witnessed(tmp_path, store, ledger, signer, verifier, Witness(documents), note)
        assert await state.round() is None
        yield state
    finally:
        await documents.close()
        await ledger.close()
        await store.close()


def _other_key_line(note: str) -> str:
    return note + "\u2014 casetrail/agency/other AAAAAAAA\n"


def _repeated_line(note: str) -> str:
    return note + note.rsplit("\n\n", 1)[1]


def _non_canonical(note: str) -> str:
    # 68 bytes of key id and signature: 92 base64 characters ending in one "=", whose last
    # letter carries 2 bits no decoder reads. Set them: the same signature, another text.
    body, line = note.rsplit("\n\n", 1)
    encoded = line.rstrip("\n").rsplit(" ", 1)[1]
    assert encoded.endswith("=")
    assert not encoded.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(encoded[-2]) ^ 1]
    return f"{body}\n\n{line[: -len(encoded) - 1]}{encoded[:-2]}{last}=\n"


@pytest.mark.parametrize(
    "rewrite",
    [_other_key_line, _repeated_line, _non_canonical],
    ids=["another key's line added", "its line repeated", "non-canonical base64"],
)
async def test_a_held_note_rewritten_so_that_it_still_verifies_raises_an_alarm_and_ends(
    witnessed: Witnessed, rewrite: Callable[[str], str]
) -> None:
    rewritten = rewrite(witnessed.note)
    assert rewritten != witnessed.note
    assert open_checkpoint(rewritten, witnessed.verifier).size == HELD  # it still verifies
    witnessed.set_note(rewritten)

    # The round looked at it again and again, holding the witness's lock, without an alarm.
    alarm = await witnessed.round()
    assert alarm is not None
    assert (alarm.held_size, alarm.checkpoint_size, alarm.first_bad_position) == (HELD, HELD, None)
    assert "rewritten" in alarm.problem
    assert witnessed.alarms == [alarm]
    assert await witnessed.round() == alarm  # kept, raised once
    assert witnessed.alarms == [alarm]
    held = await witnessed.witness.held(witnessed.verifier.name)
    assert held is not None
    assert held.note == witnessed.note  # the note witnessed is kept, not the rewritten one

    # The note put back: the log is at the checkpoint held again.
    witnessed.set_note(witnessed.note)
    assert await witnessed.round() is None
    assert await witnessed.witness.alarm(witnessed.verifier.name) is None
    assert witnessed.alarms == [alarm]


async def test_a_rewritten_note_clears_with_the_log_s_next_checkpoint(
    witnessed: Witnessed,
) -> None:
    witnessed.set_note(_other_key_line(witnessed.note))
    assert await witnessed.round() is not None
    await append_notes(witnessed.store, 2)
    await LedgerLog(witnessed.ledger, witnessed.signer).sign()
    assert await witnessed.round() is None
    held = await witnessed.witness.held(witnessed.verifier.name)
    assert held is not None
    assert held.size == HELD + 2


async def test_a_log_whose_checkpoints_and_tiles_are_gone_shrank_and_raises_the_alarm(
    witnessed: Witnessed,
) -> None:
    await wipe_ledger(witnessed.store, witnessed.tmp_path)
    assert await witnessed.ledger.size() == 0

    alarm = await witnessed.round()
    assert alarm is not None
    assert (alarm.held_size, alarm.checkpoint_size, alarm.first_bad_position) == (HELD, 0, 1)
    assert f"shrank from {HELD} to 0 events" in alarm.problem
    assert await witnessed.round() == alarm  # kept, raised once
    assert witnessed.alarms == [alarm]
    held = await witnessed.witness.held(witnessed.verifier.name)
    assert held is not None
    assert held.size == HELD

    # Its service hashes the intact store again and signs the same tree: consistent again.
    signed = await LedgerLog(witnessed.ledger, witnessed.signer).sign()
    assert signed.note == witnessed.note
    assert await witnessed.round() is None
    assert await witnessed.witness.alarm(witnessed.verifier.name) is None
    assert witnessed.alarms == [alarm]


async def test_a_held_note_with_bytes_not_utf_8_raises_an_alarm(witnessed: Witnessed) -> None:
    # SQLite: decoding the note raised sqlite3.OperationalError out of the round (and of every
    # other log's check after it in audit's round).
    db = sqlite3.connect(witnessed.tmp_path / "ledger.db", isolation_level=None)
    db.execute("UPDATE ledger_checkpoints SET note = CAST(note AS BLOB) || x'ff'")
    db.close()

    alarm = await witnessed.round()
    assert alarm is not None
    assert alarm.checkpoint_size == HELD
    assert alarm.problem.startswith(f"checkpoint of size {HELD}: a signed note ends with")
    assert witnessed.alarms == [alarm]


async def test_an_alarm_whose_telling_failed_is_told_again_next_round(
    witnessed: Witnessed,
) -> None:
    """The alarm was saved as standing before it was told: when its event could not be stored
    (audit's store away, or refusing it), later rounds took it as told and never recorded it."""
    await wipe_ledger(witnessed.store, witnessed.tmp_path)
    told: list[WitnessAlarm] = []

    async def failing(_: WitnessAlarm) -> None:
        raise StorageUnavailableError("audit's event store")

    async def telling(alarm: WitnessAlarm) -> None:
        told.append(alarm)

    with pytest.raises(StorageUnavailableError):
        await witnessed.witness.witness(witnessed.ledger, witnessed.verifier, failing)
    alarm = await witnessed.witness.witness(witnessed.ledger, witnessed.verifier, telling)

    assert alarm is not None
    assert told == [alarm]


async def test_a_vanished_log_s_alarm_whose_telling_failed_is_told_again(
    witnessed: Witnessed,
) -> None:
    told: list[WitnessAlarm] = []

    async def failing(_: WitnessAlarm) -> None:
        raise StorageUnavailableError("audit's event store")

    async def telling(alarm: WitnessAlarm) -> None:
        told.append(alarm)

    origin = witnessed.verifier.name
    with pytest.raises(StorageUnavailableError):
        await witnessed.witness.vanished(origin, failing)
    alarm = await witnessed.witness.vanished(origin, telling)
    assert await witnessed.witness.vanished(origin, telling) == alarm

    assert alarm is not None
    assert told == [alarm]
