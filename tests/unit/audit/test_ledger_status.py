"""What audit answers about a log when the ledger's table holds a checkpoint its key did not
sign (someone holding the database, not the key): the witness's alarm, and clear refusals."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import UUID

import pytest
import pytest_asyncio

from casetrail_platform.commands import RuleBroken
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.directory import LedgerDirectory
from casetrail_platform.ledger.hosting import ledger_settings, open_ledger
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import Checkpoint
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.ledger.witness import Witness
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import ANY_VERSION, EventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from events.envelope import RecordedEvent
from services.audit.app.ledger import LedgerDeps, log_status, prove_event, witness_all
from tests.support.sample_events import note, sample_registry


@dataclass(frozen=True)
class Forged:
    deps: LedgerDeps
    events: list[RecordedEvent]
    signed_size: int
    forged_size: int


async def append_notes(store: EventStore, count: int) -> None:
    """``count`` events as intake records them (audit proves events of its services' logs)."""
    for _ in range(count):
        written = note("case-7")
        intake = replace(written.metadata, source="casetrail/intake")
        await store.append("case-7", [replace(written, metadata=intake)], ANY_VERSION)


@pytest_asyncio.fixture
async def forged(tmp_path: Path) -> AsyncIterator[Forged]:
    """Intake's log: a checkpoint of 3 events signed and witnessed, then one of 5 stored in
    its table, signed by another key under the log's name."""
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
    recorded: list[RecordedEvent] = []

    async def find_event(event_id: UUID) -> RecordedEvent | None:
        return next((r for r in recorded if r.event_id == event_id), None)

    deps = LedgerDeps(directory, Witness(documents), audit_store, find_event)
    try:
        assert (await witness_all(deps)).consistent
        await append_notes(events, 2)
        recorded.extend(await events.read_all(0, 10))
        await ledger.catch_up()
        forger = FileSigner(verifier.name, tmp_path / "forger.key")
        root = await ledger.root(5)
        forged = await forger.sign_checkpoint(Checkpoint(verifier.name, 5, root))
        await ledger.store.save_checkpoint(StoredCheckpoint(5, forged))
        round_ = await witness_all(deps)
        assert [alarm.checkpoint_size for alarm in round_.alarms] == [5]
        yield Forged(deps, recorded, signed.size, 5)
    finally:
        await directory.close()
        await documents.close()
        await audit_store.close()
        await ledger.store.close()
        await events.close()


async def test_a_forged_newest_checkpoint_is_told_as_the_alarm_it_raised(forged: Forged) -> None:
    status = await log_status(forged.deps, "intake")

    # The forged note is no checkpoint the log signed: left out, the alarm tells of it.
    assert status.alarm is not None
    assert status.alarm.checkpoint_size == forged.forged_size
    assert status.witnessed is not None
    assert status.witnessed.size == forged.signed_size
    assert status.latest is None


async def test_a_proof_in_a_forged_checkpoint_is_refused_naming_it(forged: Forged) -> None:
    first = forged.events[0]

    with pytest.raises(RuleBroken) as refused:
        await prove_event(forged.deps, first.event_id, forged.forged_size)

    assert refused.value.rule == "CHECKPOINT_NOT_VERIFIED"
    assert f"checkpoint of {forged.forged_size} events" in str(refused.value)
    # In the checkpoint signed and witnessed, the proof is given.
    proof = await prove_event(forged.deps, first.event_id, forged.signed_size)
    assert proof.checkpoint.size == forged.signed_size


async def test_a_proof_in_a_log_audit_holds_no_key_of_says_so(
    forged: Forged, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint of that size was signed: the refusal is the missing key, not the size.
    async def no_key(service: str) -> None:
        del service

    monkeypatch.setattr(forged.deps.directory, "verifier", no_key)
    with pytest.raises(RuleBroken) as refused:
        await prove_event(forged.deps, forged.events[0].event_id, forged.signed_size)

    assert refused.value.rule == "CHECKPOINT_NOT_VERIFIED"
    assert "no public key" in str(refused.value)


async def test_an_export_names_the_alarm_its_pending_events_wait_on(
    forged: Forged,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Events past the witnessed checkpoint of a log under alarm are not provable with the next
    # checkpoint: the export and `casetrail verify` name the alarm, not "export again".
    import events.catalog_registry
    from casetrail_platform.ledger.export import PENDING_ATTRIBUTE
    from casetrail_platform.ledger.export_note import ExportExtent
    from casetrail_platform.ledger.pending import PENDING_NOTE_ATTRIBUTE
    from cli.ledger import PENDING_STATUS
    from cli.ledger import run as cli_run
    from services.audit.app.ledger import ExportProofs
    from services.audit.entrypoints.responses import export_chunks

    intake = forged.deps.directory.origin("intake")
    audit = FileSigner(forged.deps.directory.origin("audit"), tmp_path / "audit.key")
    deps = replace(forged.deps, sign_note=audit.sign_note)
    extent = ExportExtent()
    for recorded in forged.events:
        extent.add(recorded)
    attributes = await ExportProofs(deps, "case-7", extent).of(forged.events)

    pending = [attributes[e.event_id] for e in forged.events if e.position > forged.signed_size]
    assert len(pending) == 2
    assert all(f"inconsistency alarm on {intake}" in a[PENDING_ATTRIBUTE] for a in pending)
    assert PENDING_NOTE_ATTRIBUTE in pending[0]

    export = tmp_path / "case-7.jsonl"
    export.write_bytes(b"".join(c.json_lines for c in export_chunks(forged.events, attributes)))
    keys = tmp_path / "keys.txt"  # intake's as the fixture published it, and audit's
    keys.write_text((tmp_path / "published.keys").read_text() + f"{await audit.verifier()}\n")
    monkeypatch.setattr(events.catalog_registry, "default_registry", sample_registry)
    options = argparse.Namespace(command="verify", file=str(export), keys=str(keys), data_dir="")

    status = cli_run(options)

    out, err = capsys.readouterr()
    assert status == PENDING_STATUS, err
    assert f"2 events of {intake} not provable: audit's witness holds an inconsistency alarm" in out
    assert "only once the alarm is dealt with" in out
    assert "export again" not in out
    assert f"{len(forged.events) - 2} of {len(forged.events)} events verified" in out


@pytest.mark.parametrize("signs", [True, False])
async def test_an_export_s_extent_is_signed_once_on_its_carrier_or_left_out_logged(
    forged: Forged, tmp_path: Path, caplog: pytest.LogCaptureFixture, signs: bool
) -> None:
    """Audit signs its statement of the export's extent on the carrier's line only (here the
    first: the case's opening is not among these events); without its own key the export goes
    on without it, logged (`casetrail verify` then fails it)."""
    from casetrail_platform.ledger.export_note import EXPORT_NOTE_ATTRIBUTE, ExportExtent
    from services.audit.app.ledger import ExportProofs

    audit = FileSigner(forged.deps.directory.origin("audit"), tmp_path / "audit.key")
    deps = replace(forged.deps, sign_note=audit.sign_note if signs else None)
    extent = ExportExtent()
    for recorded in forged.events:
        extent.add(recorded)
    proofs = ExportProofs(deps, "case-7", extent)
    pages = [await proofs.of(forged.events[:2]), await proofs.of(forged.events[2:])]

    carried = [
        event.event_id
        for page in pages
        for event in forged.events
        if EXPORT_NOTE_ATTRIBUTE in page.get(event.event_id, {})
    ]
    assert carried == ([forged.events[0].event_id] if signs else [])
    unsigned = "export: no key of audit's own log: the export's extent left unsigned"
    assert (unsigned in caplog.text) is not signs
