"""`casetrail keys new-kek | rotate-kek | status` on the embedded backend's key table."""

from __future__ import annotations

from pathlib import Path

import pytest

from casetrail_platform.keys.file_kek import KEK_FILE_NAME, FileKeyEncryptionKey
from casetrail_platform.keys.hosting import KEK_FILE_VARIABLE, PREVIOUS_KEK_FILES_VARIABLE
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.sqlite import KEYS_FILE_NAME, SqliteDataKeyTable
from tests.support.cli import casetrail_exit

CLIENTS = [f"client-{number}" for number in range(7)]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded data dir whose clients' keys the default KEK wraps, one client erased."""
    monkeypatch.delenv(KEK_FILE_VARIABLE, raising=False)
    monkeypatch.delenv(PREVIOUS_KEK_FILES_VARIABLE, raising=False)
    table = SqliteDataKeyTable(tmp_path / "keys" / KEYS_FILE_NAME)
    keyring = ClientKeyring(FileKeyEncryptionKey(tmp_path / "keys" / KEK_FILE_NAME), table)
    for client in CLIENTS:
        keyring.encryption_key(client)
    keyring.destroy("client-3")
    table.close()
    return tmp_path


def test_an_operator_rotates_to_a_new_kek_and_the_old_one_can_then_be_retired(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = data_dir / "keys" / KEK_FILE_NAME
    new = data_dir / "secrets" / "kek-2.bin"
    assert casetrail_exit("keys", "new-kek", str(new)) == 0
    new_id = capsys.readouterr().out.strip()
    assert new_id == FileKeyEncryptionKey(new).key_id
    assert new.stat().st_mode & 0o777 == 0o600
    assert casetrail_exit("keys", "new-kek", str(new)) == 2  # never overwritten

    monkeypatch.setenv(KEK_FILE_VARIABLE, str(new))
    monkeypatch.setenv(PREVIOUS_KEK_FILES_VARIABLE, str(old))
    data = str(data_dir)
    assert casetrail_exit("keys", "rotate-kek", "--data-dir", data, "--batch-size", "2") == 0
    captured = capsys.readouterr()
    assert f"done: every live data key is wrapped by {new_id}" in captured.out
    assert captured.err.count("re-wrapped") == 3  # batches of 2, 2 and 2
    for secret in (old.read_bytes(), new.read_bytes()):
        for form in (secret.hex(), secret.hex().upper(), repr(secret)):
            assert form not in captured.out + captured.err

    assert casetrail_exit("keys", "status", "--data-dir", data) == 0
    assert capsys.readouterr().out == f"{new_id}  6 live data keys  (current)\n"
    # Retired: without the old KEK every live key still opens, the erased one stays erased.
    old.unlink()
    monkeypatch.delenv(PREVIOUS_KEK_FILES_VARIABLE)
    table = SqliteDataKeyTable(data_dir / "keys" / KEYS_FILE_NAME)
    keyring = ClientKeyring(FileKeyEncryptionKey(new, create=False), table)
    for client in CLIENTS:
        assert (keyring.decryption_key(client, 1) is None) == (client == "client-3")
    table.close()
    assert casetrail_exit("keys", "rotate-kek", "--data-dir", data) == 0


def test_a_rotation_without_the_old_kek_stops_and_names_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_id = FileKeyEncryptionKey(data_dir / "keys" / KEK_FILE_NAME).key_id
    new = data_dir / "kek-2.bin"
    assert casetrail_exit("keys", "new-kek", str(new)) == 0
    capsys.readouterr()

    status = casetrail_exit(
        "keys", "rotate-kek", "--data-dir", str(data_dir), "--kek-file", str(new)
    )

    assert status == 1
    assert old_id in capsys.readouterr().err
    assert (
        casetrail_exit("keys", "status", "--data-dir", str(data_dir), "--kek-file", str(new)) == 0
    )
    assert capsys.readouterr().out == f"{old_id}  6 live data keys\n"


def test_a_missing_kek_file_or_key_table_is_an_error_not_a_new_key(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = data_dir / "nowhere.bin"
    options = ("--data-dir", str(data_dir), "--kek-file", str(missing))
    for action in ("rotate-kek", "status"):
        # A usage error naming the file, not an outage to retry (exit 1 before).
        assert casetrail_exit("keys", action, *options) == 2
        err = capsys.readouterr().err
        assert f"--kek-file {missing}: no such KEK file" in err
        assert "retry" not in err
    assert not missing.exists()
    assert casetrail_exit("keys", "rotate-kek", "--data-dir", str(data_dir / "empty")) == 2
    assert "no data-key table" in capsys.readouterr().err
    assert (
        casetrail_exit("keys", "rotate-kek", "--data-dir", str(data_dir), "--batch-size", "0") == 2
    )


def test_a_previous_kek_that_is_a_directory_or_missing_is_refused_naming_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read only when a key it wrapped is met: with none, it was accepted silently."""
    for previous, problem in ((data_dir, "not a KEK file"), (data_dir / "no.bin", "no such")):
        options = ("--data-dir", str(data_dir), "--previous-kek-file", str(previous))
        for action in ("status", "rotate-kek"):
            assert casetrail_exit("keys", action, *options) == 2
            assert f"--previous-kek-file {previous}: {problem}" in capsys.readouterr().err


def test_a_kek_file_others_may_read_is_a_usage_error_naming_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused as the services refuse it, in one line, exit 2 (a traceback, exit 1, before)."""
    kek_file = data_dir / "keys" / KEK_FILE_NAME
    kek_file.chmod(0o644)
    for action in ("status", "rotate-kek"):
        assert casetrail_exit("keys", action, "--data-dir", str(data_dir)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"stopped: {kek_file}: "), err
        assert "chmod 600" in err


@pytest.mark.postgres
def test_a_database_without_the_key_table_is_said_and_left_as_it_was(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Asking the distributed backend's status (or a rotation) of a database without the key
    table created an empty key schema there and answered "no live data keys", though the
    operator had named the wrong database."""
    import psycopg

    from casetrail_platform.keys.postgres import KEYS_SCHEMA
    from tests.support.servers import database_of_its_own

    with database_of_its_own("keys_absent") as dsn:
        for action in ("status", "rotate-kek"):
            assert casetrail_exit("keys", action, "--backend", "distributed", "--pg-dsn", dsn) == 2
            assert f"no data-key table in the database's schema {KEYS_SCHEMA}" in (
                capsys.readouterr().err
            )
        with psycopg.connect(dsn) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (KEYS_SCHEMA,)
            ).fetchone()
        assert row == (0,)
