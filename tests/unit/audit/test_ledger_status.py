"""What audit answers about a log (``GetLedgerCheckpoint``) when the log's newest checkpoint is
the one its witness raised the alarm on: the alarm, told to the auditor who asks."""

from __future__ import annotations

from pathlib import Path

from casetrail_platform.hosting import Infrastructure
from casetrail_platform.ledger.directory import LedgerDirectory
from casetrail_platform.ledger.hosting import ledger_settings, open_ledger
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.ledger.witness import Witness
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from services.audit.app.ledger import LedgerDeps, log_status, witness_all
from tests.contract.test_ledger_contract import append_notes
from tests.support.sample_events import sample_registry


async def _nothing(_: object) -> None:
    return None


async def test_a_forged_newest_checkpoint_is_told_as_the_alarm_it_raised(tmp_path: Path) -> None:
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    events = await SqliteEventStore.open(infra.data_dir / "intake" / "events.db", sample_registry())
    await append_notes(events, 3)
    ledger = await open_ledger(infra, "intake")
    signed = await ledger.sign()
    verifier = await ledger.verifier()
    keys_file = tmp_path / "published.keys"
    keys_file.write_text(f"{verifier}\n")
    directory = LedgerDirectory(
        ledger_settings(infra, {"CASETRAIL_LEDGER_PUBLIC_KEYS": str(keys_file)})
    )
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    audit_store = await SqliteEventStore.open(tmp_path / "audit-events.db", default_registry())
    deps = LedgerDeps(directory, Witness(documents), audit_store, _nothing)
    try:
        assert (await witness_all(deps)).consistent
        # Someone holding the database but not the key stores a newer checkpoint signed by
        # another key under the log's name.
        await append_notes(events, 2)
        await ledger.catch_up()
        forger = FileSigner(verifier.name, tmp_path / "forger.key")
        root = await ledger.root(5)
        forged = await forger.sign_checkpoint(Checkpoint(verifier.name, 5, root))
        await ledger.store.save_checkpoint(StoredCheckpoint(5, forged))
        round_ = await witness_all(deps)
        assert [alarm.checkpoint_size for alarm in round_.alarms] == [5]

        status = await log_status(deps, "intake")

        # The forged note is no checkpoint the log signed: left out, the alarm tells of it.
        assert status.alarm is not None
        assert status.alarm.checkpoint_size == 5
        assert status.witnessed is not None
        assert status.witnessed.size == signed.size == 3
        assert status.latest is None
    finally:
        await directory.close()
        await documents.close()
        await audit_store.close()
        await ledger.store.close()
        await events.close()
