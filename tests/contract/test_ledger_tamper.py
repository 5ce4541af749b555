"""Tampering with stored events behind the triggers' back is detected, on SQLite and PostgreSQL.

Each case drops (or disables) the immutability triggers in the test's own data and then flips a
byte, deletes an event (renumbering the rest so positions stay dense), reorders two events, or
truncates the store and appends new events. Two attackers:

* one who changes only the events: ``verify_store`` names the first bad position;
* one who also rebuilds the ledger from the tampered events and signs a new checkpoint with
  the log's key: audit's witness, holding the checkpoint signed before, raises the alarm and
  names the first bad position (and ``verify_store`` given that checkpoint detects it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casetrail_platform.ledger import verify
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerLog, LedgerTampered
from casetrail_platform.ledger.note import open_checkpoint, origin_of
from casetrail_platform.ledger.verify import verify_store
from casetrail_platform.ledger.witness import Witness, WitnessAlarm
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.contract.conftest import StoreOpener
from tests.support.ledger import KINDS, append_notes, open_ledger, postgres_sql, tamper, wipe_ledger

SIZE = 40


@pytest.fixture
async def witness_documents(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    yield documents
    await documents.close()


@pytest.mark.parametrize("batch", [verify.BATCH, 7], ids=["one batch", "batches of 7"])
@pytest.mark.parametrize("kind", list(KINDS))
async def test_tampering_is_detected_and_the_first_bad_position_named(
    kind: str,
    batch: int,
    open_store: StoreOpener,
    tmp_path: Path,
    witness_documents: SqliteReadModelStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Batches of 7: the bad position lies in a later batch, read while one before is checked.
    monkeypatch.setattr(verify, "BATCH", batch)
    statements, first_bad = KINDS[kind]
    store = await open_store()
    if not isinstance(store, SqliteEventStore):
        statements = postgres_sql(statements)
    signer = FileSigner(origin_of("test-agency", "test"), tmp_path / "keys" / "test.key")
    verifier = await signer.verifier()
    ledger_store = await open_ledger(store, tmp_path)
    log = LedgerLog(ledger_store, signer)
    await append_notes(store, 10, per_commit=5)
    await append_notes(store, SIZE - 10)
    held = await log.sign()
    witness = Witness(witness_documents)
    alarms: list[WitnessAlarm] = []

    async def raised(alarm: WitnessAlarm) -> None:
        alarms.append(alarm)

    assert await witness.witness(ledger_store, verifier, raised) is None
    assert (await witness.held(verifier.name)) is not None

    await tamper(store, tmp_path, statements)
    if kind == "truncate and append":
        fresh = await open_store()  # a new writer sees the truncated store
        await append_notes(fresh, 15)

    # Attacker 1 changed only the events: verify-store names the first bad position, and the
    # log itself refuses to sign over a store that no longer matches its ledger.
    checked = await verify_store(ledger_store, verifier)
    assert not checked.ok
    assert checked.first_bad_position == first_bad, checked.problem
    if kind in ("delete an event", "truncate and append"):
        with pytest.raises(LedgerTampered):
            await log.sign()

    # Attacker 2 rebuilds the ledger from the tampered events and signs with the log's key.
    await ledger_store.close()
    await tamper(store, tmp_path, [])
    await wipe_ledger(store, tmp_path)
    ledger_store = await open_ledger(store, tmp_path)
    rebuilt = LedgerLog(ledger_store, signer)
    forged = await rebuilt.sign()
    assert (await verify_store(ledger_store, verifier)).ok  # self-consistent, as the attacker meant

    alarm = await witness.witness(ledger_store, verifier, raised)
    assert alarm is not None
    assert alarms == [alarm]
    assert alarm.first_bad_position == first_bad, alarm.problem
    assert alarm.held_size == SIZE
    assert alarm.checkpoint_size == forged.size
    # Raised once per bad checkpoint, kept while it stands.
    assert await witness.witness(ledger_store, verifier, raised) == alarm
    assert len(alarms) == 1

    # verify-store given the checkpoint audit held detects the rewrite too.
    trusted = open_checkpoint(held.note, verifier)
    with_held = await verify_store(ledger_store, verifier, trusted=[trusted])
    assert not with_held.ok
    assert with_held.first_bad_position is not None
    assert with_held.first_bad_position <= first_bad
    await ledger_store.close()
