"""One contract for every parking lot: in memory, SQLite (beside the events), PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.parking import InMemoryParkingLot, ParkedRecord, ParkingLot
from casetrail_platform.store.sqlite import SqliteEventStore
from casetrail_platform.store.sqlite_parking import SqliteParkingLot
from tests.support.sample_events import sample_registry
from tests.support.servers import postgres_dsn, server_missing


def parked(position: int, key: str, relay: str = "relay") -> ParkedRecord:
    return ParkedRecord(
        relay=relay,
        position=position,
        event_id=uuid4(),
        key=key,
        stream=f"case-{key}",
        sequence=position,
        event_type="casetrail.test.note-written",
        reason="refused by the bus: MessageSizeTooLargeError",
        parked_at=datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def lot(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ParkingLot]:
    if request.param == "memory":
        yield InMemoryParkingLot()
    elif request.param == "sqlite":
        store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
        yield SqliteParkingLot(store)
        await store.close()
    else:
        from casetrail_platform.store.postgres_parking import PostgresParkingLot

        schema = f"test_parking_{os.urandom(4).hex()}"
        try:
            lot = await PostgresParkingLot.connect(postgres_dsn(), schema=schema)
        except Exception as error:
            server_missing("PostgreSQL", error)
        yield lot
        import psycopg

        async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as c:
            await c.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_parked_records_come_back_by_position_per_relay(lot: ParkingLot) -> None:
    second, first, other = parked(7, "a"), parked(3, "b"), parked(5, "a", relay="other")
    await lot.park([second, first, other])
    await lot.park([parked(7, "a")])  # parked twice: the first stays
    assert await lot.parked("relay") == [first, second]
    assert await lot.parked("other") == [other]


async def test_a_retry_is_requested_per_key_or_for_all_and_cleared(lot: ParkingLot) -> None:
    await lot.park([parked(1, "a"), parked(2, "a"), parked(3, "b")])
    assert await lot.request_retry("relay", "a") == 2
    assert [r.retry_requested for r in await lot.parked("relay")] == [True, True, False]
    await lot.retry_done("relay", "a")
    assert not any(r.retry_requested for r in await lot.parked("relay"))
    assert await lot.request_retry("relay") == 3


async def test_a_retry_refused_again_gives_the_refused_record_its_reason(lot: ParkingLot) -> None:
    """A record held behind one the retry published, then refused itself, keeps the bus's
    refusal as its reason (its "held:" one named a record no longer parked)."""
    held = replace(parked(2, "a"), reason="held: position 1 of this case is parked")
    await lot.park([held, parked(3, "a")])
    await lot.request_retry("relay", "a")
    await lot.retry_done("relay", "a", (2, "refused by the bus: RecordTooLarge"))
    two, three = await lot.parked("relay")
    assert (two.reason, two.retry_requested) == ("refused by the bus: RecordTooLarge", False)
    assert (three.reason, three.retry_requested) == (parked(3, "a").reason, False)


async def test_released_records_are_forgotten(lot: ParkingLot) -> None:
    await lot.park([parked(1, "a"), parked(2, "a"), parked(3, "b")])
    await lot.release("relay", [1, 2])
    assert [r.position for r in await lot.parked("relay")] == [3]
