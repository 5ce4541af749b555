"""`casetrail verify-store` says whether it checked the checkpoints' signatures, and takes the
public keys as audit publishes them (`--keys`) when the service's key is not at hand."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.hosting import checkpoint_record, key_path, open_ledger
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.note import MAX_KEYS_FILE_BYTES, origin_of
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.ledger import MAX_CHECKPOINT_BYTES
from cli.main import main
from tests.support.cli import casetrail_exit
from tests.support.ledger import append_notes
from tests.support.sample_events import sample_registry


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    """Intake's store of 12 events with a signed checkpoint, published to its
    ``ledger.checkpoint`` as the embedded default keeps it."""
    infra = Infrastructure(data_dir=tmp_path)
    store = await SqliteEventStore.open(tmp_path / "intake" / "events.db", sample_registry())
    await append_notes(store, 12, per_commit=3)
    ledger = await open_ledger(infra, "intake")
    record = checkpoint_record(infra, "intake")
    ledger.publish_to(record)
    await ledger.sign()
    await record.stop()
    await ledger.store.close()
    await store.close()
    return tmp_path


def test_with_the_published_key_the_signatures_are_checked(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 0

    out = capsys.readouterr().out
    assert "12 events hashed" in out
    assert "OK: the store is the tree its checkpoints signed" in out


def test_a_ledger_emptied_is_held_to_the_checkpoint_its_log_published(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the database's rights and no key, an event edited and the ledger's tables emptied:
    verify-store trusted only --checkpoint, said "0 checkpoints checked ... OK" and exit 0,
    while the service refused the store on restart against its ``ledger.checkpoint``."""
    ledger = sqlite3.connect(data_dir / "intake" / "ledger.db", isolation_level=None)
    ledger.execute("DELETE FROM ledger_tiles")
    ledger.execute("DELETE FROM ledger_checkpoints")
    ledger.close()
    arguments = ["verify-store", "intake", "--data-dir", str(data_dir)]

    assert casetrail_exit(*arguments) == 1
    out = capsys.readouterr().out
    assert "intake: its log published a checkpoint of 12 events" in out
    assert "the trusted checkpoint of size 12 was signed over more" in out
    assert "no longer covers positions 1 to 12" in out

    events = sqlite3.connect(data_dir / "intake" / "events.db", isolation_level=None)
    events.execute("DROP TRIGGER stored_events_are_immutable")
    events.execute(
        "UPDATE stored_events SET data = CAST(replace(CAST(data AS TEXT), 'visit', 'visiT')"
        " AS BLOB) WHERE position = 5"
    )
    events.close()
    assert casetrail_exit(*arguments) == 1
    out = capsys.readouterr().out
    assert "TAMPERED at position 1: the tree of the first 12 events is not the one signed" in out
    assert "OK" not in out


def test_without_a_key_it_says_the_signatures_were_not_checked(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = key_path(data_dir, "intake").with_suffix(".pub")
    keys_file = data_dir / "keys.txt"
    keys_file.write_text(published.read_text())
    published.unlink()

    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    assert "WITHOUT checking their signatures" in out
    assert "their signatures were not checked" in out
    assert "checkpoints signed" not in out

    keys = ["--keys", str(keys_file)]
    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir), *keys) == 0
    assert "OK: the store is the tree its checkpoints signed" in capsys.readouterr().out


def test_keys_that_name_another_log_are_refused(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    FileSigner("casetrail/another-agency/intake", tmp_path / "other" / "ledger.key")
    keys_file = tmp_path / "other-keys.txt"
    keys_file.write_text((tmp_path / "other" / "ledger.pub").read_text())

    arguments = ["verify-store", "intake", "--data-dir", str(data_dir), "--keys", str(keys_file)]
    assert casetrail_exit(*arguments) == 2
    assert "holds no public key named casetrail/" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--keys", "--checkpoint"])
def test_a_keys_or_checkpoint_file_too_large_for_one_is_refused_naming_it(
    option: str, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both are small by nature: read whole, a huge file (or a device) held the command."""
    limit = MAX_KEYS_FILE_BYTES if option == "--keys" else MAX_CHECKPOINT_BYTES
    large = data_dir / "large.txt"
    large.write_text(key_path(data_dir, "intake").with_suffix(".pub").read_text() * limit)

    arguments = ["verify-store", "intake", "--data-dir", str(data_dir), option, str(large)]
    assert casetrail_exit(*arguments) == 2
    assert f"{option} {large}: " in (err := capsys.readouterr().err)
    assert f"larger than {limit:,} bytes" in err


@pytest.mark.parametrize("keys_file", ["missing", "not keys"])
def test_a_configured_keys_file_that_cannot_be_read_is_named(
    keys_file: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``CASETRAIL_LEDGER_PUBLIC_KEYS`` (audit's keys file, which verify-store reads before the
    service's own ``ledger.pub``) missing or holding no keys: one line naming it, exit 2, as an
    unreadable ``--keys`` (a traceback before)."""
    path = data_dir / "keys.txt"
    if keys_file == "not keys":
        path.write_text("not a verifier key\n")
    monkeypatch.setenv("CASETRAIL_LEDGER_PUBLIC_KEYS", str(path))

    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 2
    err = capsys.readouterr().err
    assert f"CASETRAIL_LEDGER_PUBLIC_KEYS {path}: cannot read the public keys: " in err


@pytest.mark.parametrize("content", ["not a verifier key\n", ""])
def test_a_services_own_public_keys_that_cannot_be_read_are_named_not_taken_for_none(
    content: str, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its ``ledger.pub`` there but unreadable (a log handed back to a retired key wrote one
    no keys file reader takes): verify-store said OK with no signature checked, exit 0."""
    published = key_path(data_dir, "intake").with_suffix(".pub")
    published.write_text(content)

    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 2
    assert f"{published}: cannot read the public keys: " in capsys.readouterr().err


def test_a_services_published_keys_too_large_for_one_are_refused_naming_the_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``casetrail verify`` without ``--keys`` reads the data dir's ``ledger.pub`` files within
    the same bound: read whole, a huge one (or a device put there) held the command."""
    published = key_path(data_dir, "intake").with_suffix(".pub")
    published.write_text(published.read_text() * MAX_KEYS_FILE_BYTES)
    export = data_dir / "export.jsonl"
    export.write_text("")

    assert casetrail_exit("verify", str(export), "--data-dir", str(data_dir)) == 2
    err = capsys.readouterr().err
    assert f"{published}: cannot read the public keys: " in err
    assert f"larger than {MAX_KEYS_FILE_BYTES:,} bytes" in err


def test_public_keys_are_computed_offline_from_the_private_key_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``casetrail ledger public-keys DIR``: the keys audit is given on Kubernetes, from the
    files of the chart's ``secrets.signingKeys`` (``<service>.key``), none created."""
    signers = {
        service: FileSigner(origin_of("county", service), tmp_path / "made" / f"{service}.key")
        for service in ("intake", "planning")
    }
    keys = tmp_path / "secret"
    keys.mkdir()
    for service in signers:
        (keys / f"{service}.key").write_bytes((tmp_path / "made" / f"{service}.key").read_bytes())
        (keys / f"{service}.key").chmod(0o600)  # as a private key must be (read_private)

    with pytest.raises(SystemExit) as exit_:
        main(["ledger", "public-keys", str(keys), "--agency", "county"])
    assert exit_.value.code == 0
    printed = capsys.readouterr()
    expected = [str(asyncio.run(signer.verifier())) for signer in signers.values()]
    assert sorted(printed.out.splitlines()) == sorted(expected)
    assert "coordination" in printed.err  # its file is missing: said, not guessed
    assert sorted(p.name for p in keys.iterdir()) == ["intake.key", "planning.key"]


def test_a_private_key_file_that_cannot_be_read_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``DIR/<service>.key`` a directory: one line naming it, exit 2 (a traceback before)."""
    (tmp_path / "intake.key").mkdir()

    with pytest.raises(SystemExit) as exit_:
        main(["ledger", "public-keys", str(tmp_path)])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'intake.key'}: cannot read the key: Is a directory" in err


@pytest.mark.postgres
def test_a_database_where_the_service_never_stored_is_told_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Opening its ledger there failed with InvalidSchemaName; nothing is created either.
    import psycopg

    from tests.support.servers import database_of_its_own

    with database_of_its_own("verify_store") as dsn:
        arguments = ["--backend", "distributed", "--pg-dsn", dsn, "--data-dir", str(tmp_path)]
        assert casetrail_exit("verify-store", "intake", *arguments) == 2
        assert "intake has no store in PostgreSQL" in capsys.readouterr().err
        with psycopg.connect(dsn) as connection:
            schemas = connection.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'intake_events'"
            ).fetchone()
        assert schemas == (0,)


def test_a_checkpoint_note_not_utf_8_is_reported_not_a_traceback(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite hands TEXT back decoded: a note with a byte not UTF-8 (written with the database's
    # rights) raised sqlite3.OperationalError out of the command, quoting the note.
    db = sqlite3.connect(data_dir / "intake" / "ledger.db", isolation_level=None)
    db.execute("UPDATE ledger_checkpoints SET note = CAST(note AS BLOB) || x'ff'")
    db.close()

    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 1
    assert "the checkpoint of size 12 is invalid" in capsys.readouterr().out


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_verify_store_writes_nothing_embedded(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor's check: every file that was there keeps its bytes, and SQLite adds at most
    a WAL database's empty companions, as any reader does."""
    before = _files(data_dir)

    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 0
    assert "OK: the store is the tree its checkpoints signed" in capsys.readouterr().out

    after = _files(data_dir)
    assert {name: after[name] for name in before} == before
    added = set(after) - set(before)
    assert {Path(name).name for name in added} <= {
        f"{db}-{end}" for db in ("events.db", "ledger.db") for end in ("wal", "shm")
    }
    assert all(after[name] == b"" for name in added if name.endswith("-wal"))


async def test_the_read_only_store_refuses_writes_embedded(data_dir: Path) -> None:
    from casetrail_platform.ledger.hosting import open_ledger_store
    from casetrail_platform.ledger.port import StoredCheckpoint

    store = await open_ledger_store(Infrastructure(data_dir=data_dir), "intake", read_only=True)
    try:
        assert await store.size() == 12
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.save_checkpoint(StoredCheckpoint(99, "forged"))
    finally:
        await store.close()


def test_a_store_whose_ledger_was_never_created_is_told_and_left_so(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify-store created ``ledger.db`` (its tables) where the service had not yet."""
    for path in (data_dir / "intake").glob("ledger.db*"):
        path.unlink()

    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 2
    assert "intake has no ledger yet" in capsys.readouterr().err
    assert not list((data_dir / "intake").glob("ledger.db*"))


@pytest.mark.parametrize("replaced", ["ledger.db", "events.db"])
def test_a_ledger_or_store_file_that_is_no_database_fails_naming_it(
    data_dir: Path, replaced: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file overwritten (corrupted, or replaced by someone covering their tracks) is what an
    auditor's check is for: it ended verify-store with sqlite3's traceback ("file is not a
    database"); now a failed verification naming the file, exit 1."""
    for path in (data_dir / "intake").glob(f"{replaced}*"):
        path.unlink()
    (data_dir / "intake" / replaced).write_bytes(b"not a database" * 512)

    assert casetrail_exit("verify-store", "intake", "--data-dir", str(data_dir)) == 1
    err = capsys.readouterr().err
    assert f"intake: {data_dir / 'intake' / replaced} cannot be read: " in err, err


def test_workers_hash_a_large_store_and_one_that_dies_is_told(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextlib import nullcontext

    from casetrail_platform.ledger import verify
    from casetrail_platform.ledger.sqlite import SqliteLedgerStore
    from casetrail_platform.ledger.store_ranges import StoreRanges
    from tests.support.ledger import DyingRanges

    # 12 events count as a large store here, in ranges of 4.
    monkeypatch.setattr(verify, "PARALLEL_FROM", 1)
    monkeypatch.setattr(verify, "RANGE", 4)
    in_workers = verify._hash_in_workers
    counted: list[int] = []

    async def counting(*arguments: Any) -> None:
        counted.append(arguments[2])
        await in_workers(*arguments)

    monkeypatch.setattr(verify, "_hash_in_workers", counting)
    arguments = ["verify-store", "intake", "--data-dir", str(data_dir)]
    assert casetrail_exit(*arguments, "--workers", "2") == 0
    assert counted == [2]
    out = capsys.readouterr().out
    assert "12 events hashed" in out
    assert "OK: the store is the tree its checkpoints signed" in out
    # One worker: this process reads the store alone.
    assert casetrail_exit(*arguments, "--workers", "1") == 0
    assert counted == [2]
    assert casetrail_exit(*arguments, "--workers", "0") == 2
    assert "must be a whole number from 1 to 64" in capsys.readouterr().err

    dying = StoreRanges(DyingRanges(data_dir / "intake" / "events.db"), 12)
    monkeypatch.setattr(SqliteLedgerStore, "store_ranges", lambda self: nullcontext(dying))
    assert casetrail_exit(*arguments, "--workers", "2") == 1
    err = capsys.readouterr().err
    assert "intake: a worker process hashing positions 1 to 4 ended before it answered" in err
