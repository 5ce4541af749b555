"""The key table binds a case to one client for good, on both backends, and says which: two
replicas opening one case id for two clients (one idempotency key, two requests) each learn
the client the table kept, so neither seals the case under the other's key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from casetrail_platform.keys.port import DataKeyTable, KeyUnavailableError
from casetrail_platform.keys.postgres import PostgresDataKeyTable
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from tests.support.servers import postgres_dsn, server_missing


@pytest.fixture(params=["sqlite", "postgres"])
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[DataKeyTable]]:
    """Two connections to one key table, as two replicas hold."""
    if request.param == "sqlite":
        sqlite_tables: list[DataKeyTable] = [
            SqliteDataKeyTable(tmp_path / "keys.db") for _ in range(2)
        ]
        yield sqlite_tables
        for table in sqlite_tables:
            table.close()
        return
    schema = f"keys_{uuid.uuid4().hex[:12]}"
    first = PostgresDataKeyTable(postgres_dsn(), schema=schema)
    try:
        first.live_keys_by_kek()
    except KeyUnavailableError as error:
        server_missing("PostgreSQL", error)
    pg_tables: list[DataKeyTable] = [first, PostgresDataKeyTable(postgres_dsn(), schema=schema)]
    yield pg_tables
    for table in pg_tables:
        table.close()
    with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_binding_a_case_answers_the_client_the_table_holds(tables: list[DataKeyTable]) -> None:
    one, other = tables
    assert one.bind_case("case-1", "client-a") == "client-a"
    assert other.bind_case("case-1", "client-b") == "client-a"
    assert one.bind_case("case-1", "client-a") == "client-a"
    assert other.client_of_case("case-1") == "client-a"


def test_racing_bindings_all_learn_the_one_kept(tables: list[DataKeyTable]) -> None:
    one, other = tables
    for round_ in range(20):
        case_id = f"case-{round_}"
        with ThreadPoolExecutor(2) as pool:
            kept = list(
                pool.map(
                    lambda bound, case_id=case_id: bound[0].bind_case(case_id, bound[1]),
                    [(one, f"client-a-{round_}"), (other, f"client-b-{round_}")],
                )
            )
        assert kept[0] == kept[1] == one.client_of_case(case_id)
