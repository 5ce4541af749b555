"""Audit's timeline on PostgreSQL with replicas: its consumer group spreads the topics' partitions
over them, and the projection is idempotent (no per-batch lock), so two replicas may apply two
events of one case at once. The case's header (its count, where its last fact entry falls) and
its facts document, an entry sorted in when it arrives late, must come out as one replica
applying both would leave them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from casetrail_platform.projections.port import Document
from casetrail_platform.projections.postgres import PostgresReadModelStore
from events.catalog.cases import PresentingNeed
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from services.audit.adapters.timeline import CASES, FACTS, TimelineProjection
from tests.support.replicas import read_model_replicas, waiting_for_a_lock
from tests.unit.audit.support import (
    CASE,
    DAY,
    T0,
    Producer,
    assigned,
    coordination,
    intake,
    opened,
)

PROJECTION = TimelineProjection()
OPENED = intake().record(opened(), occurred_at=T0)
ASSIGNED = coordination().record(assigned(), occurred_at=T0 + DAY)
MENTAL_HEALTH = (PresentingNeed(category=NeedCategory.MENTAL_HEALTH, description="Low mood"),)
OPENED_SENSITIVE = intake().record(
    opened().model_copy(update={"presenting_needs": MENTAL_HEALTH}), occurred_at=T0
)
ERASED = Producer("casetrail/intake", "client-client-7f3a").record(
    ClientErased(client_id="client-7f3a", case_ids=(CASE,), request_reference="dms://r/1"),
    occurred_at=T0 + 9 * DAY,
)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[PostgresReadModelStore, PostgresReadModelStore]]:
    """Two replicas' read-model stores on one schema (a connection each)."""
    async with read_model_replicas("timeline") as pair:
        yield pair


async def _stored(store: PostgresReadModelStore) -> dict[str, Document | None]:
    return {
        "header": await store.get(CASES, CASE),
        "facts": await store.get(FACTS, CASE),
    }


async def test_two_replicas_applying_events_of_one_case_at_once_lose_nothing(
    replicas: tuple[PostgresReadModelStore, PostgresReadModelStore],
) -> None:
    one, two = replicas
    async with one.transaction() as transaction:
        for recorded in (OPENED, ASSIGNED):
            await PROJECTION.handle(transaction, recorded)
    one_replica = await _stored(one)
    assert one_replica["header"] is not None
    assert one_replica["header"]["events"] == 2
    await one.reset(PROJECTION.name, PROJECTION.collections)

    wrote, go = asyncio.Event(), asyncio.Event()

    async def apply_later() -> None:
        async with two.transaction() as transaction:
            await PROJECTION.handle(transaction, ASSIGNED)
            wrote.set()
            await go.wait()  # written, not committed

    async def apply_earlier() -> None:
        # Its opening arrives late: the entry is sorted in before the assignment's.
        async with one.transaction() as transaction:
            await PROJECTION.handle(transaction, OPENED)

    later = asyncio.ensure_future(apply_later())
    await asyncio.wait_for(wrote.wait(), 10)
    earlier = asyncio.ensure_future(apply_earlier())
    await waiting_for_a_lock()
    go.set()
    await later
    await earlier

    assert await _stored(one) == one_replica


@pytest.mark.parametrize("first", ["opening", "erasure"])
async def test_an_erasure_applied_beside_the_cases_first_event_scrubs_its_entry(
    replicas: tuple[PostgresReadModelStore, PostgresReadModelStore], first: str
) -> None:
    """The client's erasure and the case's first event on two replicas at once: before, the
    erasure found no header (the other's was not committed), scrubbed nothing and waited for
    nothing, and the opening's entry kept its category of need in the clear."""
    one, two = replicas
    ahead, behind = (OPENED_SENSITIVE, ERASED) if first == "opening" else (ERASED, OPENED_SENSITIVE)
    wrote, go = asyncio.Event(), asyncio.Event()

    async def apply_ahead() -> None:
        async with two.transaction() as transaction:
            await PROJECTION.handle(transaction, ahead)
            wrote.set()
            await go.wait()  # written, not committed

    async def apply_behind() -> None:
        async with one.transaction() as transaction:
            await PROJECTION.handle(transaction, behind)

    started = asyncio.ensure_future(apply_ahead())
    await asyncio.wait_for(wrote.wait(), 10)
    waiting = asyncio.ensure_future(apply_behind())
    try:
        await waiting_for_a_lock()
    finally:
        go.set()
        await started
        await waiting

    stored = await _stored(one)
    assert stored["facts"] is not None
    assert [entry["categories"] for entry in stored["facts"]["entries"]] == [[]]
    assert stored["header"] is not None
    assert stored["header"]["erased"] is True
