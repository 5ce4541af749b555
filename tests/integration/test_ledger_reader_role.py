"""Audit reads other services' ledgers on PostgreSQL as a role that can read their hashes and
checkpoints and nothing else, and can write nothing (issue 10: audit with a read-only role)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from casetrail_platform.errors import StorageConfigurationError, StorageUnavailableError
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.directory import LedgerDirectory
from casetrail_platform.ledger.hosting import open_ledger
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerLog
from casetrail_platform.ledger.note import origin_of
from casetrail_platform.ledger.port import LedgerNotCreated
from casetrail_platform.ledger.postgres import READER_ROLE, PostgresLedgerStore
from casetrail_platform.ledger.witness import Witness
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.postgres import PostgresEventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from services.audit.app.ledger import LedgerDeps, witness_all
from tests.support.ledger import append_notes
from tests.support.sample_events import sample_registry
from tests.support.servers import database_of_its_own, postgres_dsn, server_missing

AUDIT_LOGIN = "casetrail_test_audit_login"


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    """A service's store with a signed ledger of 5 events."""
    name = f"reader_{uuid.uuid4().hex[:10]}"
    try:
        store = await PostgresEventStore.connect(postgres_dsn(), sample_registry(), schema=name)
    except Exception as error:
        server_missing("PostgreSQL", error)
    ledger = await PostgresLedgerStore.connect(postgres_dsn(), schema=name)
    try:
        await append_notes(store, 5)
        signer = FileSigner(origin_of("test-agency", "intake"), tmp_path / "intake.key")
        await LedgerLog(ledger, signer).sign()
        yield name
    finally:
        await ledger.close()
        await store.close()
        async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as db:
            await db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


WRITES = [
    "INSERT INTO {schema}.ledger_checkpoints (size, note) VALUES (99, 'forged')",
    "UPDATE {schema}.ledger_tiles SET hashes = ''",
    "DELETE FROM {schema}.ledger_checkpoints",
    "DELETE FROM {schema}.stored_events",
    "CREATE TABLE {schema}.planted (x int)",
]


async def _refused(connection: psycopg.AsyncConnection[Any], statement: str, schema: str) -> bool:
    try:
        async with connection.transaction():
            await connection.execute(sql.SQL(statement).format(schema=sql.Identifier(schema)))
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction):
        return True
    return False


async def test_the_reader_reads_hashes_and_checkpoints_and_writes_nothing(schema: str) -> None:
    reader = await PostgresLedgerStore.connect_reader(postgres_dsn(), schema=schema)
    try:
        assert await reader.size() == 5
        assert len(await reader.leaf_hashes(0, 10)) == 5
        assert [checkpoint.size for checkpoint in await reader.checkpoints()] == [5]

        async def attempts(connection: psycopg.AsyncConnection[Any]) -> list[bool]:
            refused = [await _refused(connection, write, schema) for write in WRITES]
            # Not even a read of the events themselves.
            refused.append(
                await _refused(connection, "SELECT count(*) FROM {schema}.stored_events", schema)
            )
            return refused

        assert await reader._connections.run(attempts) == [True] * (len(WRITES) + 1)
    finally:
        await reader.close()


async def test_a_login_role_in_the_reader_role_cannot_write_even_after_reset_role(
    schema: str,
) -> None:
    """Production: audit logs in as its own role, a member of the reader role only; leaving
    the reader role (RESET ROLE) gives it no more than it had."""
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as admin:
        await admin.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {login})"
                " THEN CREATE ROLE {role} LOGIN IN ROLE {reader}; END IF; END $$"
            ).format(
                login=sql.Literal(AUDIT_LOGIN),
                role=sql.Identifier(AUDIT_LOGIN),
                reader=sql.Identifier(READER_ROLE),
            )
        )
    conninfo = psycopg.conninfo.make_conninfo(postgres_dsn(), user=AUDIT_LOGIN)
    reader = await PostgresLedgerStore.connect_reader(conninfo, schema=schema)
    try:
        assert await reader.size() == 5
    finally:
        await reader.close()
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as audit:
        await audit.execute("RESET ROLE")
        await audit.execute("SET default_transaction_read_only = off")
        for write in WRITES:
            assert await _refused(audit, write, schema), write


async def test_a_login_outside_the_reader_role_is_a_configuration_error(schema: str) -> None:
    """What the chart's owner login got before the chart made it a member: not an outage to
    retry for ever, but an error saying which GRANT is missing."""
    outsider = "casetrail_test_not_a_reader"
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as admin:
        await admin.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {login})"
                " THEN CREATE ROLE {role} LOGIN; END IF; END $$"
            ).format(login=sql.Literal(outsider), role=sql.Identifier(outsider))
        )
    conninfo = psycopg.conninfo.make_conninfo(postgres_dsn(), user=outsider)
    with pytest.raises(StorageConfigurationError) as refused:
        await PostgresLedgerStore.connect_reader(conninfo, schema=schema)
    assert not isinstance(refused.value, StorageUnavailableError)
    assert f"GRANT {READER_ROLE} TO" in str(refused.value)


async def test_a_ledger_that_does_not_exist_is_told_apart_from_an_outage() -> None:
    """Both were "no log" to audit's witness, which then skipped a log it held that had been
    dropped (``Witness.vanished``), and took an outage for a log gone."""
    with pytest.raises(LedgerNotCreated):
        await PostgresLedgerStore.connect_reader(
            postgres_dsn(), schema=f"dropped_{uuid.uuid4().hex[:10]}"
        )
    away = psycopg.conninfo.make_conninfo(postgres_dsn(), port=1, connect_timeout=2)
    with pytest.raises(StorageUnavailableError):
        await PostgresLedgerStore.connect_reader(away, schema="intake_events")


async def _nothing(_: object) -> None:
    return None


async def test_a_ledger_schema_dropped_while_audit_reads_it_raises_the_witness_alarm(
    tmp_path: Path,
) -> None:
    """Audit's witness kept the reader it had opened: every round failed on the missing
    tables and called the log unchecked, and no alarm was recorded until audit restarted
    (SQLite's deleted ledger.db alarmed at once: the backends differed)."""
    with database_of_its_own("witness") as dsn:
        infra = Infrastructure(data_dir=tmp_path / "data", postgres_dsn=dsn, seal_sensitive=False)
        store = await PostgresEventStore.connect(dsn, sample_registry(), schema="intake_events")
        ledger = await open_ledger(infra, "intake")
        directory = LedgerDirectory(infra, ("intake",))
        documents = SqliteReadModelStore(tmp_path / "witness.db")
        audit_store = await SqliteEventStore.open(tmp_path / "audit.db", default_registry())
        deps = LedgerDeps(directory, Witness(documents), audit_store, _nothing)
        try:
            await append_notes(store, 3)
            await ledger.sign()
            assert (await witness_all(deps)).consistent
            await ledger.store.close()
            await store.close()
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                await admin.execute("DROP SCHEMA intake_events CASCADE")

            round_ = await witness_all(deps)

            [alarm] = round_.alarms
            assert "does not exist" in alarm.problem
            assert not round_.unchecked
            recorded = [type(r.event).__name__ for r in await audit_store.read_all(0)]
            assert recorded == ["LedgerInconsistencyDetected"]
        finally:
            await directory.close()
            await documents.close()
            await audit_store.close()
