"""The ledger's test tooling: a ledger store beside a contract test's event store, notes
appended to a store, tampering with stored events behind the triggers' back (the kinds the
tamper tests try, on SQLite and PostgreSQL) and with the ledger's own tables (the database's
rights, no key), a verification worker that dies, a signed store on
PostgreSQL, and the signature lines of a checkpoint note as a forger might change them (with
Go's verdict on each)."""

from __future__ import annotations

import base64
import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.keys import FileSigner
from casetrail_platform.ledger.log import LedgerLog
from casetrail_platform.ledger.note import origin_of
from casetrail_platform.ledger.port import CheckpointRecord, LedgerStore
from casetrail_platform.ledger.postgres import PostgresLedgerStore
from casetrail_platform.ledger.sqlite import SqliteLedgerStore
from casetrail_platform.ledger.sqlite_ranges import SqliteRanges
from casetrail_platform.ledger.store_ranges import RangeHasher, RangeHashes
from casetrail_platform.store.port import EventStore
from casetrail_platform.store.postgres import PostgresEventStore
from casetrail_platform.store.sqlite import SqliteEventStore
from tests.support.sample_events import note, sample_registry
from tests.support.servers import postgres_dsn


async def open_ledger(event_store: EventStore, tmp_path: Path) -> LedgerStore:
    """The ledger of ``event_store`` as the contract tests open it: beside its SQLite file in
    ``tmp_path``, or in its PostgreSQL schema."""
    if isinstance(event_store, SqliteEventStore):
        return await SqliteLedgerStore.open(tmp_path / "ledger.db", tmp_path / "events.db")
    return await PostgresLedgerStore.connect(postgres_dsn(), schema=event_store._schema)  # type: ignore[attr-defined]


async def append_notes(store: EventStore, count: int, per_commit: int = 1) -> None:
    """``count`` notes on a new case, ``per_commit`` to an append."""
    case = f"case-{uuid.uuid4().hex[:8]}"
    version = await store.stream_version(case)
    while count > 0:
        batch = [note(case, f"visit {i}") for i in range(min(per_commit, count))]
        await store.append(case, batch, version)
        version += len(batch)
        count -= len(batch)


BAD = 17
"""The position the tampering kinds change first."""


async def tamper(store: EventStore, tmp_path: Path, statements: list[str]) -> None:
    """Runs SQL on the store's table with its triggers out of the way."""
    if isinstance(store, SqliteEventStore):
        connection = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
        connection.execute("DROP TRIGGER IF EXISTS stored_events_are_immutable")
        connection.execute("DROP TRIGGER IF EXISTS stored_events_are_never_deleted")
        for statement in statements:
            connection.execute(statement.replace("{table}", "stored_events"))
        connection.close()
        return
    import psycopg

    schema = store._schema  # type: ignore[attr-defined]
    table = f'"{schema}".stored_events'
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as db:
        await db.execute(f"ALTER TABLE {table} DISABLE TRIGGER stored_events_are_immutable")
        for statement in statements:
            await db.execute(statement.replace("{table}", table))


FLIP = [
    "UPDATE {table} SET data = CAST(replace(CAST(data AS TEXT), 'visit', 'visiT') AS BLOB)"
    f" WHERE position = {BAD}"
]
DELETE = [
    f"DELETE FROM {{table}} WHERE position = {BAD}",
    f"UPDATE {{table}} SET position = -position WHERE position > {BAD}",
    "UPDATE {table} SET position = -position - 1 WHERE position < 0",
]
REORDER = [
    f"UPDATE {{table}} SET position = -1 WHERE position = {BAD}",
    f"UPDATE {{table}} SET position = {BAD} WHERE position = {BAD + 6}",
    f"UPDATE {{table}} SET position = {BAD + 6} WHERE position = -1",
]
TRUNCATE_AT = 30
TRUNCATE = [f"DELETE FROM {{table}} WHERE position > {TRUNCATE_AT}"]


def postgres_sql(statements: list[str]) -> list[str]:
    return [
        s.replace(
            "CAST(replace(CAST(data AS TEXT), 'visit', 'visiT') AS BLOB)",
            "convert_to(replace(convert_from(data, 'UTF8'), 'visit', 'visiT'), 'UTF8')",
        )
        for s in statements
    ]


KINDS = {
    "flip a byte": (FLIP, BAD),
    "delete an event": (DELETE, BAD),
    "reorder two events": (REORDER, BAD),
    "truncate and append": (TRUNCATE, TRUNCATE_AT + 1),
}


async def wipe_ledger(store: EventStore, tmp_path: Path) -> None:
    """Deletes the ledger's tiles and checkpoints: what someone with the database's rights but
    not the signing key can do."""
    await tamper_ledger(store, tmp_path, ["DELETE FROM {tiles}", "DELETE FROM {checkpoints}"])


async def tamper_ledger(store: EventStore, tmp_path: Path, statements: list[str]) -> None:
    """Runs SQL on the ledger's tables (``{tiles}``, ``{checkpoints}``) beside ``store``, with
    the database's rights and no signing key."""
    if isinstance(store, SqliteEventStore):
        connection = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        for statement in statements:
            connection.execute(
                statement.format(tiles="ledger_tiles", checkpoints="ledger_checkpoints")
            )
        connection.close()
        return
    import psycopg

    schema = store._schema  # type: ignore[attr-defined]
    tables = {"tiles": f'"{schema}".ledger_tiles', "checkpoints": f'"{schema}".ledger_checkpoints'}
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as db:
        for statement in statements:
            await db.execute(statement.format(**tables))


class DyingRanges(SqliteRanges):
    """Ends its worker process, without a word, on the first range."""

    def open(self) -> tuple[RangeHasher, Callable[[], None]]:
        hasher, close = super().open()

        def hash_range(start: int, stop: int) -> RangeHashes:
            if start == 0:
                os._exit(3)
            return hasher(start, stop)

        return hash_range, close


async def signed_store(
    dsn: str, key: Path, events: int, record: CheckpointRecord | None = None
) -> None:
    """Intake's store on PostgreSQL (``dsn``, schema ``intake_events``) with ``events`` notes and
    a checkpoint signed with the key file ``key`` (published to ``record``, if given), as the
    service would have left them."""
    store = await PostgresEventStore.connect(dsn, sample_registry(), schema="intake_events")
    ledger = await PostgresLedgerStore.connect(dsn, schema="intake_events")
    try:
        await append_notes(store, events)
        origin = origin_of(Infrastructure(data_dir=key.parent).agency, "intake")
        log = LedgerLog(ledger, FileSigner(origin, key))
        if record is not None:
            log.publish_to(record)
        await log.sign()
    finally:
        await ledger.close()
        await store.close()


def signature_variants(note: str) -> dict[str, str]:
    """Note ``note`` (signed once by its key) with its signature lines changed as a forger
    or a careless tool might: what Go's ``note.Open`` makes of each is in ``GO_ACCEPTS``."""
    body, _, line = note.rpartition("\n\n")
    ours = line.rstrip("\n")
    name, encoded = ours.removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(encoded)
    other = f"\u2014 casetrail/other/intake {base64.b64encode(b'abcd' + raw[4:]).decode()}"

    def lines(*signatures: str) -> str:
        return body + "\n\n" + "".join(f"{signature}\n" for signature in signatures)

    short = f"\u2014 {name} {base64.b64encode(raw[:-1]).decode()}"
    return {
        "once": lines(ours),
        "the same line twice": lines(ours, ours),
        "a valid line of the key, then a truncated one": lines(ours, short),
        "a truncated line of the key, then a valid one": lines(short, ours),
        "another key's line twice": lines(other, other, ours),
        "another key's line of only a key id": lines(
            f"\u2014 casetrail/other/intake {base64.b64encode(b'abcd').decode()}", ours
        ),
        "another key's line that is not base64": lines(f"{other}!", ours),
        "another key's name with a '+'": lines(other.replace("other", "ot+her"), ours),
        "100 signature lines": lines(*[other] * 99, ours),
        "101 signature lines": lines(*[other] * 100, ours),
    }


GO_ACCEPTS = {
    "once": True,
    "the same line twice": True,  # the key's later lines are dropped unread
    "a valid line of the key, then a truncated one": True,
    "a truncated line of the key, then a valid one": False,
    "another key's line twice": True,  # repeats of an unknown key are dropped
    "another key's line of only a key id": False,
    "another key's line that is not base64": False,
    "another key's name with a '+'": False,
    "100 signature lines": True,
    "101 signature lines": False,
}
"""Go's verdicts (``tests/integration/test_ledger_independent.py`` asks Go itself)."""
