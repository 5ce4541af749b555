"""The migration the Helm chart's Job runs: every service's schemas, idempotently; an
unreachable database is one clear line and exit status 1 (the Job retries), no stack trace."""

from __future__ import annotations

import psycopg
import pytest

from services.migrate import main, migrate
from services.runner import SERVICES
from tests.support.servers import database_of_its_own, postgres_dsn, server_missing

pytestmark = pytest.mark.postgres


async def test_every_service_schema_exists_after_migrating_twice() -> None:
    try:
        await migrate(postgres_dsn(), SERVICES)
    except psycopg.OperationalError as error:
        server_missing("PostgreSQL", error)
    await migrate(postgres_dsn(), SERVICES)
    async with await psycopg.AsyncConnection.connect(postgres_dsn()) as connection:
        cursor = await connection.execute("SELECT nspname FROM pg_namespace")
        schemas = {row[0] for row in await cursor.fetchall()}
    for service in SERVICES:
        assert {f"{service}_events", f"{service}_read_models"} <= schemas


async def test_migrating_creates_the_relays_parking_lot_beside_the_events() -> None:
    """Replicas find every table made before traffic, none left to create as they start."""
    with database_of_its_own("migrate") as dsn:
        await migrate(dsn, ["intake"])
        async with await psycopg.AsyncConnection.connect(dsn) as connection:
            cursor = await connection.execute(
                "SELECT table_schema FROM information_schema.tables"
                " WHERE table_name = 'parked_records'"
            )
            assert await cursor.fetchall() == [("intake_events",)]


def test_an_unreachable_database_is_reported_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CASETRAIL_PG_DSN", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert main(["--service", "intake"]) == 1
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1
    assert "cannot reach PostgreSQL" in errors[0].getMessage()
    assert errors[0].exc_info is None
