"""One round of audit's witness checks every log on its own: a log that cannot be read (its
driver raising on a row) is reported, unchecked and not consistent, and never stops the check
of the logs after it. What it failed on stays out of the log (by type and place)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.directory import LedgerDirectory
from casetrail_platform.ledger.hosting import open_ledger
from casetrail_platform.ledger.port import LedgerStore, StoredCheckpoint
from casetrail_platform.ledger.witness import Witness
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from services.audit.app.ledger import LedgerDeps, witness_all
from tests.support.ledger import append_notes
from tests.support.sample_events import sample_registry

SECRET = "a note quoting a client's name"


async def _unreadable(*_: object, **__: object) -> StoredCheckpoint | None:
    raise sqlite3.OperationalError(f"Could not decode to UTF-8 column 'note' with text '{SECRET}'")


async def _nothing(_: object) -> None:
    return None


async def test_a_log_that_fails_to_be_read_stops_no_other_log_s_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    stores = {
        service: await SqliteEventStore.open(
            infra.data_dir / service / "events.db", sample_registry()
        )
        for service in ("intake", "planning")
    }
    logs = {service: await open_ledger(infra, service) for service in stores}
    directory = LedgerDirectory(infra)
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    audit_store = await SqliteEventStore.open(tmp_path / "audit-events.db", default_registry())
    deps = LedgerDeps(directory, Witness(documents), audit_store, _nothing)
    try:
        for service, store in stores.items():
            await append_notes(store, 3)
            await logs[service].sign()
        assert (await witness_all(deps)).consistent

        # Intake's ledger now raises on reading its checkpoints; planning's grew meanwhile.
        intake = await directory.log("intake")
        assert isinstance(intake, LedgerStore)
        monkeypatch.setattr(intake, "checkpoints", _unreadable)
        monkeypatch.setattr(intake, "latest_checkpoint", _unreadable)
        await append_notes(stores["planning"], 2)
        await logs["planning"].sign()
        with caplog.at_level(logging.ERROR):
            round_ = await witness_all(deps)

        assert round_.unchecked == ["intake"]
        assert not round_.consistent
        planning = await deps.witness.held(directory.origin("planning"))
        assert planning is not None
        assert planning.size == 5  # checked all the same, after intake failed
        (told,) = [r.getMessage() for r in caplog.records if "could not check" in r.getMessage()]
        assert "intake" in told
        assert "OperationalError" in told
        assert SECRET not in caplog.text
    finally:
        await directory.close()
        await documents.close()
        await audit_store.close()
        for service, store in stores.items():
            await logs[service].store.close()
            await store.close()


async def test_a_log_whose_ledger_is_deleted_is_alarmed_until_it_is_back(
    tmp_path: Path,
) -> None:
    """A deleted ledger file was skipped as "not created yet", or read through the handle the
    witness had opened, as it was: the witness said nothing of a log it held that is gone."""
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    store = await SqliteEventStore.open(infra.data_dir / "intake" / "events.db", sample_registry())
    ledger = await open_ledger(infra, "intake")
    directory = LedgerDirectory(infra, ("intake",))
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    audit_store = await SqliteEventStore.open(tmp_path / "audit-events.db", default_registry())
    deps = LedgerDeps(directory, Witness(documents), audit_store, _nothing)
    ledger_file = infra.data_dir / "intake" / "ledger.db"
    try:
        await append_notes(store, 3)
        await ledger.sign()
        assert (await witness_all(deps)).consistent
        await ledger.store.close()
        ledger_file.rename(tmp_path / "ledger.db.kept")

        first = await witness_all(deps)
        again = await witness_all(deps)

        for round_ in (first, again):
            [alarm] = round_.alarms
            assert (alarm.held_size, alarm.checkpoint_size) == (3, 0)
            assert "does not exist" in alarm.problem
        raised = [r.event for r in await audit_store.read_all(0)]
        assert [type(event).__name__ for event in raised] == ["LedgerInconsistencyDetected"]

        (tmp_path / "ledger.db.kept").rename(ledger_file)
        assert (await witness_all(deps)).consistent
    finally:
        await directory.close()
        await documents.close()
        await audit_store.close()
        await store.close()
