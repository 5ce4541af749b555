"""Audit witnesses each service's log with the public keys it is given
(``CASETRAIL_LEDGER_PUBLIC_KEYS``, chart ``ledger.publicKeys``). On Kubernetes the services'
``ledger.pub`` files are in their own pods: a log whose key audit lacks must be reported as
not witnessed, never skipped as if it had been checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.directory import LedgerDirectory, PublishedKeysUnreadable
from casetrail_platform.ledger.hosting import key_path, ledger_settings, open_ledger
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import MAX_KEYS_FILE_BYTES, NoteError, origin_of
from casetrail_platform.ledger.witness import Witness
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from services.audit.app.ledger import LedgerDeps, published_keys, witness_all
from tests.support.ledger import append_notes
from tests.support.sample_events import sample_registry


async def _round(infra: Infrastructure, tmp_path: Path, keys: str) -> tuple[list[str], int]:
    keys_file = tmp_path / "published.keys"
    keys_file.write_text(keys)
    # The keys file wins over the ledger.pub the service wrote beside its key (which, on
    # Kubernetes, is in the service's pod, not audit's).
    configured = ledger_settings(infra, {"CASETRAIL_LEDGER_PUBLIC_KEYS": str(keys_file)})
    directory = LedgerDirectory(configured)
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    store = await SqliteEventStore.open(tmp_path / "audit-events.db", sample_registry())
    try:
        deps = LedgerDeps(directory, Witness(documents), store, _nothing)
        round_ = await witness_all(deps)
        return round_.unkeyed, len(round_.alarms)
    finally:
        await directory.close()
        await documents.close()
        await store.close()


async def _nothing(_: object) -> None:
    return None


async def test_a_log_whose_key_audit_lacks_is_reported_not_skipped(tmp_path: Path) -> None:
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    events_file = infra.data_dir / "intake" / "events.db"
    events = await SqliteEventStore.open(events_file, sample_registry())
    await append_notes(events, 3)
    ledger = await open_ledger(infra, "intake")
    await ledger.sign()
    published = str(await ledger.verifier())
    foreign = str(
        await FileSigner(origin_of("other-agency", "intake"), tmp_path / "other.key").verifier()
    )
    try:
        assert await _round(infra, tmp_path, foreign + "\n") == (["intake"], 0)
        assert await _round(infra, tmp_path, f"{foreign}\n\n{published}\n") == ([], 0)
    finally:
        await ledger.store.close()
        await events.close()


async def test_audit_witnesses_a_log_across_its_key_rotation(tmp_path: Path) -> None:
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    events = await SqliteEventStore.open(infra.data_dir / "intake" / "events.db", sample_registry())
    await append_notes(events, 3)
    ledger = await open_ledger(infra, "intake")
    await ledger.sign()
    old = str(await ledger.verifier())
    new_signer = FileSigner(ledger.origin, tmp_path / "new.key")
    new = f"{await new_signer.verifier()} from=5 at=2026-12-05T02:00:00Z"
    try:
        assert await _round(infra, tmp_path, f"{old}\n{new}\n") == ([], 0)  # holds 3
        await append_notes(events, 2)
        await ledger.hand_over(new_signer)
        await append_notes(events, 4)
        await ledger.sign()
        assert await _round(infra, tmp_path, f"{old}\n{new}\n") == ([], 0)  # 5, then 9
        documents = SqliteReadModelStore(tmp_path / "witness.db")
        witness = Witness(documents)
        held = await witness.held(ledger.origin)
        assert held is not None
        assert held.size == 9
        # ListLedgerKeys: the log's keys in the order they signed, each with its range.
        configured = ledger_settings(
            infra, {"CASETRAIL_LEDGER_PUBLIC_KEYS": str(tmp_path / "published.keys")}
        )
        deps = LedgerDeps(LedgerDirectory(configured), witness, events, _nothing)
        await documents.close()
        assert [key for service, _, key in await published_keys(deps) if service == "intake"] == [
            old,
            new,
        ]
    finally:
        await ledger.store.close()
        await events.close()


async def test_a_keys_file_is_read_within_its_bound_wherever_it_comes_from(tmp_path: Path) -> None:
    # The configured keys file and a service's ledger.pub were read whole (a device, or a file
    # of gigabytes, held audit's witness and its memory): now within MAX_KEYS_FILE_BYTES.
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    ledger = await open_ledger(infra, "intake")
    published = key_path(infra.data_dir, "intake").with_suffix(".pub")
    line = str(await ledger.verifier()) + "\n"
    huge = line * (MAX_KEYS_FILE_BYTES // len(line) + 1)
    keys_file = tmp_path / "published.keys"
    keys_file.write_text(huge)
    configured = LedgerDirectory(
        ledger_settings(infra, {"CASETRAIL_LEDGER_PUBLIC_KEYS": str(keys_file)})
    )
    beside = LedgerDirectory(infra)
    try:
        with pytest.raises(NoteError, match="larger than"):
            await configured.verifier("intake")
        assert await beside.verifier("intake") is not None
        published.write_text(huge)
        with pytest.raises(PublishedKeysUnreadable, match="larger than"):
            await beside.verifier("intake")  # as an unreadable one: named, never no key
    finally:
        await configured.close()
        await beside.close()
        await ledger.store.close()


@pytest.mark.parametrize("unreadable", ["a directory", "no keys file", "several logs' keys"])
async def test_a_services_own_public_keys_that_cannot_be_read_are_named_not_taken_for_none(
    tmp_path: Path, unreadable: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The ``ledger.pub`` the service wrote, there but holding no one log's keys (not
    readable, not a keys file, several logs'): the directory took it for no key, so audit's
    witness told the operator to configure a keys file, ``ListLedgerKeys`` left the log out and
    an export left its events unmarked. Named now, as ``verify-store`` names it; a missing one
    is still no key."""
    infra = Infrastructure(data_dir=tmp_path / "data", seal_sensitive=False)
    events = await SqliteEventStore.open(infra.data_dir / "intake" / "events.db", sample_registry())
    await append_notes(events, 3)
    ledger = await open_ledger(infra, "intake")
    await ledger.sign()
    published = key_path(infra.data_dir, "intake").with_suffix(".pub")
    other = await FileSigner(origin_of("example-agency", "planning"), tmp_path / "p.key").verifier()
    if unreadable == "a directory":
        published.unlink()
        published.mkdir()
    elif unreadable == "no keys file":
        published.write_text("not a verifier key\n")
    else:
        published.write_text(f"{published.read_text()}{other}\n")
    directory = LedgerDirectory(infra)
    documents = SqliteReadModelStore(tmp_path / "witness.db")
    try:
        with pytest.raises(PublishedKeysUnreadable, match="cannot read the public keys"):
            await directory.verifier("intake")
        round_ = await witness_all(LedgerDeps(directory, Witness(documents), events, _nothing))
        assert (round_.unkeyed, round_.unchecked) == ([], ["intake"])
        assert f"{published}: cannot read the public keys: " in caplog.text
        assert await directory.verifier("planning") is None  # none written: no key
    finally:
        await directory.close()
        await documents.close()
        await ledger.store.close()
        await events.close()
