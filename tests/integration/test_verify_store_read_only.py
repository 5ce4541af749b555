"""`casetrail verify-store` on PostgreSQL is an auditor's check: it runs with a login that may
only read the service's schema, and leaves the database as it found it (its dump unchanged).
Before, it opened the ledger as the service does, creating, migrating and granting: with such
a login it failed, and with the services' login it could write."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from casetrail_platform.infrastructure import Infrastructure
from tests.support.cli import casetrail_exit
from tests.support.ledger import signed_store
from tests.support.servers import (
    database_of_its_own,
    servers_required,
)

SELECT_ONLY = "casetrail_test_select_only"


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own: the store's schema is ``intake_events`` whatever the test."""
    with database_of_its_own("verify_ro") as dsn:
        yield dsn


def _select_only_login(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {login})"
                " THEN CREATE ROLE {role} LOGIN; END IF; END $$"
            ).format(login=sql.Literal(SELECT_ONLY), role=sql.Identifier(SELECT_ONLY))
        )
        admin.execute(
            sql.SQL("GRANT USAGE ON SCHEMA intake_events TO {}").format(sql.Identifier(SELECT_ONLY))
        )
        admin.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA intake_events TO {}").format(
                sql.Identifier(SELECT_ONLY)
            )
        )
    return psycopg.conninfo.make_conninfo(dsn, user=SELECT_ONLY)


def _dump(dsn: str) -> str:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        message = "pg_dump is not installed"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [pg_dump, "--dbname", dsn, "--no-sync"], capture_output=True, text=True, check=True
    )
    # Newer pg_dumps fence the script with a random \restrict key, different each run.
    return "".join(
        line
        for line in done.stdout.splitlines(keepends=True)
        if not line.startswith(("\\restrict ", "\\unrestrict "))
    )


def _keys_file(tmp_path: Path) -> Path:
    keys = tmp_path / "keys.txt"
    keys.write_text((tmp_path / "intake.pub").read_text())
    return keys


def test_a_select_only_login_verifies_and_the_database_is_unchanged(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(signed_store(database, tmp_path / "intake.key", 7))
    login = _select_only_login(database)
    before = _dump(database)

    arguments = ["--backend", "distributed", "--pg-dsn", login, "--data-dir", str(tmp_path)]
    keys = ["--keys", str(_keys_file(tmp_path))]
    assert casetrail_exit("verify-store", "intake", *arguments, *keys) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "7 events hashed" in out
    assert "OK: the store is the tree its checkpoints signed" in out
    assert _dump(database) == before


def test_with_the_services_login_nothing_is_written_either(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ledger's tables dropped (a service that never ran its ledger): the services' login
    could create them; verify-store says there is no ledger and creates nothing."""
    asyncio.run(signed_store(database, tmp_path / "intake.key", 3))
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute("DROP TABLE intake_events.ledger_tiles, intake_events.ledger_checkpoints")
    before = _dump(database)

    arguments = ["--backend", "distributed", "--pg-dsn", database, "--data-dir", str(tmp_path)]
    assert casetrail_exit("verify-store", "intake", *arguments) == 2
    assert "intake has no ledger yet" in capsys.readouterr().err
    assert _dump(database) == before


async def test_the_read_only_store_refuses_writes(database: str, tmp_path: Path) -> None:
    from casetrail_platform.ledger.hosting import open_ledger_store
    from casetrail_platform.ledger.port import StoredCheckpoint

    await signed_store(database, tmp_path / "intake.key", 2)
    infra = Infrastructure(data_dir=tmp_path, postgres_dsn=database)
    store = await open_ledger_store(infra, "intake", read_only=True)
    try:
        assert await store.size() == 2
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await store.save_checkpoint(StoredCheckpoint(99, "forged"))
    finally:
        await store.close()
