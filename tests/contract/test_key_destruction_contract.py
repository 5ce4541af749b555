"""A destroyed data key is gone from the key table's files on both backends, also when another
connection reads (SQLite's write-ahead log) or an older snapshot is open (PostgreSQL's dead row
versions) at the erasure, and when an erasure cut off midway is retried: the erasure fails
UNAVAILABLE rather than report a key gone that is still on disk, and its retry finishes it."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from casetrail_platform.keys import postgres as postgres_keys
from casetrail_platform.keys.port import KeyUnavailableError
from casetrail_platform.keys.postgres import PostgresDataKeyTable
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from tests.support.servers import postgres_dsn, server_missing

OWNERS = [f"client-{n}" for n in range(20)]


def _wrapped() -> dict[str, bytes]:
    return {owner: os.urandom(60) for owner in OWNERS}


@pytest.fixture
def pg_table() -> Iterator[PostgresDataKeyTable]:
    schema = f"keys_{uuid.uuid4().hex[:12]}"
    table = PostgresDataKeyTable(postgres_dsn(), schema=schema)
    try:
        table.live_keys_by_kek()
    except KeyUnavailableError as error:
        server_missing("PostgreSQL", error)
    yield table
    table.close()
    with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _pg_on_disk(table: PostgresDataKeyTable, secret: bytes) -> bool:
    """Whether ``secret`` is in the table's heap file (superuser: the test server's)."""
    with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
        admin.execute("CHECKPOINT")
        [(found,)] = admin.execute(
            "SELECT position(%s::bytea IN pg_read_binary_file("
            f"pg_relation_filepath('{table._schema}.data_keys')))",
            (secret,),
        ).fetchall()
    return bool(found)


def test_postgres_an_erasure_retried_after_its_vacuum_was_cut_off_vacuums(
    pg_table: PostgresDataKeyTable,
) -> None:
    keys = _wrapped()
    for owner, wrapped in keys.items():
        pg_table.create(owner, 1, wrapped, "kek")
    # The first attempt cleared the bytes, then its session dropped before VACUUM.
    pg_table._run(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = now() WHERE owner = %s",
        ("client-3",),
        fetch=False,
    )
    assert pg_table.destroy("client-3") == 0
    assert not _pg_on_disk(pg_table, keys["client-3"])
    assert _pg_on_disk(pg_table, keys["client-4"])  # the check sees what is there


def test_postgres_an_older_snapshot_fails_the_erasure_until_it_ends(
    pg_table: PostgresDataKeyTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_keys, "_VACUUM_WAIT_SECONDS", 0.3)
    keys = _wrapped()
    for owner, wrapped in keys.items():
        pg_table.create(owner, 1, wrapped, "kek")
    with psycopg.connect(postgres_dsn()) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute(f"SELECT count(*) FROM {pg_table._schema}.data_keys").fetchall()
        with pytest.raises(KeyUnavailableError) as refused:
            pg_table.destroy("client-3")
        assert keys["client-3"].hex() not in str(refused.value)
        assert _pg_on_disk(pg_table, keys["client-3"])
        reader.rollback()
    assert pg_table.destroy("client-3") == 0  # the retry
    assert not _pg_on_disk(pg_table, keys["client-3"])
    stored = pg_table.version("client-3", 1)
    assert stored is not None
    assert stored.wrapped is None


def test_postgres_a_snapshot_ending_during_the_vacuum_never_answers_the_key_gone(
    pg_table: PostgresDataKeyTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vacuum ran first and the older snapshots were looked for after it: one open during
    the vacuum (which then kept the key's old row version) and ended before the look found
    none, and the erasure was answered with the key still on disk."""
    monkeypatch.setattr(postgres_keys, "_VACUUM_WAIT_SECONDS", 0.3)
    keys = _wrapped()
    for owner, wrapped in keys.items():
        pg_table.create(owner, 1, wrapped, "kek")
    with psycopg.connect(postgres_dsn()) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute(f"SELECT count(*) FROM {pg_table._schema}.data_keys").fetchall()
        executing = psycopg.Connection.execute

        def ending_the_reader_after_a_vacuum(
            connection: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any
        ) -> Any:
            done = executing(connection, query, *args, **kwargs)
            if query == "VACUUM data_keys" and connection is not reader:
                reader.rollback()
            return done

        monkeypatch.setattr(psycopg.Connection, "execute", ending_the_reader_after_a_vacuum)
        try:
            pg_table.destroy("client-3")
        except KeyUnavailableError:
            pass  # refused: the retry finishes it
        else:
            assert not _pg_on_disk(pg_table, keys["client-3"])
        monkeypatch.undo()
        reader.rollback()
    pg_table.destroy("client-3")
    assert not _pg_on_disk(pg_table, keys["client-3"])


def test_postgres_a_key_created_while_the_erasure_runs_is_destroyed_with_it(
    pg_table: PostgresDataKeyTable,
) -> None:
    """Another replica, which looked before the erasure and found no key, creates one while
    the erasure runs. The erasure cleared the keys first and wrote the tombstone after: a key
    committed between the two outlived it, and what was sealed for the erased owner afterwards
    stayed readable. Here the creation is held open across the whole erasure."""
    secret = os.urandom(60)
    with psycopg.connect(postgres_dsn()) as creator:
        creator.execute(
            f"INSERT INTO {pg_table._schema}.data_keys (owner, version, wrapped, kek_id)"
            " VALUES ('case:c-1', 1, %s, 'kek')",
            (secret,),
        )
        erasing = threading.Thread(target=pg_table.destroy, args=("case:c-1",))
        erasing.start()
        erasing.join(timeout=1.0)  # the erasure waits on the creation, or is done
        creator.commit()
    erasing.join()
    stored = pg_table.version("case:c-1", 1)
    assert stored is not None
    assert stored.wrapped is None
    assert not _pg_on_disk(pg_table, secret)


def _sqlite_on_disk(directory: Path, secret: bytes) -> bool:
    return any(secret in path.read_bytes() for path in directory.iterdir())


def test_sqlite_a_reader_of_the_log_fails_the_erasure_until_it_ends(tmp_path: Path) -> None:
    table = SqliteDataKeyTable(tmp_path / "keys.db")
    keys = _wrapped()
    for owner, wrapped in keys.items():
        table.create(owner, 1, wrapped, "kek")
    table._connection.execute("PRAGMA busy_timeout = 100")  # not the 30 s of production
    reader = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM data_keys").fetchall()
    with pytest.raises(KeyUnavailableError):
        table.destroy("client-3")
    assert _sqlite_on_disk(tmp_path, keys["client-3"])
    reader.close()
    assert table.destroy("client-3") == 0  # the retry
    assert not _sqlite_on_disk(tmp_path, keys["client-3"])
    assert _sqlite_on_disk(tmp_path, keys["client-4"])
    table.close()
