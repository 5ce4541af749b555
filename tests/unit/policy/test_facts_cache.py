"""The in-memory policy facts: kept per case, forgotten by the commit that changes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casetrail_platform.policy.facts import CaseFacts, entry_of, unknown_case
from casetrail_platform.policy.facts_cache import CachedFacts, CaseFactsCache
from casetrail_platform.policy.projection import FACTS, CaseFactsProjection, CaseFactsReader
from casetrail_platform.projections.port import ChangeCallback, Document
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.access import (
    AccessPurpose,
    ConsentGranted,
    ConsentRecipient,
    ConsentRevoked,
    RecipientKind,
    RecordSection,
)
from events.envelope import RecordedEvent
from tests.support.replicas import read_model_replicas
from tests.unit.audit.support import CASE, T0, intake, opened

PARTNER = "harbor-counseling"


class CountingReadModels(SqliteReadModelStore):
    """The real SQLite read models, counting the facts documents read."""

    reads = 0

    async def get(self, collection: str, key: str) -> Document | None:
        if collection == FACTS:
            self.reads += 1
        return await super().get(collection, key)

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        if collection == FACTS:
            self.reads += 1
        return await super().get_many(collection, keys)


class UnwatchableReadModels(CountingReadModels):
    """Read models shared with writers this process cannot see (as replicas share one)."""

    def watch(self, collection: str, changed: ChangeCallback) -> bool:
        return False


@pytest.fixture
async def read_models(tmp_path: Path) -> AsyncIterator[CountingReadModels]:
    store = CountingReadModels(tmp_path / "read-models.db")
    yield store
    await store.close()


def granted() -> ConsentGranted:
    return ConsentGranted(
        case_id=CASE,
        client_id="client-7f3a",
        consent_id="consent-1",
        scope=(RecordSection.REFERRALS,),
        recipient=ConsentRecipient(kind=RecipientKind.AGENCY, recipient_id=PARTNER, name=PARTNER),
        purpose=AccessPurpose.COORDINATION,
        expires_at=datetime.now(UTC) + timedelta(days=90),
        document_reference="scan://consents/1.pdf",
    )


def revoked() -> ConsentRevoked:
    return ConsentRevoked(
        case_id=CASE, client_id="client-7f3a", consent_id="consent-1", reason="withdrawn"
    )


def history() -> list[RecordedEvent]:
    case = intake()
    return [
        case.record(opened(), occurred_at=T0),
        case.record(granted(), occurred_at=T0 + timedelta(minutes=1)),
        case.record(revoked(), occurred_at=T0 + timedelta(minutes=2)),
    ]


def consent_in_force(facts: CaseFacts) -> bool:
    return any(consent.in_force(datetime.now(UTC)) for consent in facts.consents)


async def test_facts_are_read_once_then_kept(read_models: CountingReadModels) -> None:
    opening, granting, _ = history()
    await BusProjectionHandler(read_models, CaseFactsProjection(), service="planning").handle_batch(
        [opening, granting]
    )
    reader = CaseFactsReader(read_models)

    first = await reader.facts(CASE)
    again = await reader.facts(CASE)

    assert again is first
    assert consent_in_force(first)
    assert read_models.reads == 1


async def test_the_facts_of_many_cases_are_read_at_once_then_kept(
    read_models: CountingReadModels,
) -> None:
    """A list answer's cases (up to a thousand): one read for those not kept, then kept."""
    opening, granting, _ = history()
    await BusProjectionHandler(read_models, CaseFactsProjection(), service="planning").handle_batch(
        [opening, granting]
    )
    reader = CaseFactsReader(read_models)
    kept = await reader.facts("case-kept")

    found = await reader.facts_of([CASE, "case-unknown", "case-kept", CASE])

    assert read_models.reads == 2  # case-kept alone, then the others together
    assert list(found) == [CASE, "case-unknown", "case-kept"]
    assert consent_in_force(found[CASE])
    assert found["case-unknown"] == unknown_case("case-unknown")
    assert found["case-kept"] is kept
    assert await reader.facts(CASE) is found[CASE]
    assert read_models.reads == 2


async def test_a_revocation_is_seen_by_the_next_read(read_models: CountingReadModels) -> None:
    opening, granting, revoking = history()
    feed = BusProjectionHandler(read_models, CaseFactsProjection(), service="planning")
    await feed.handle_batch([opening, granting])
    reader = CaseFactsReader(read_models)
    assert consent_in_force(await reader.facts(CASE))

    await feed.handle_batch([revoking])

    assert not consent_in_force(await reader.facts(CASE))
    assert read_models.reads == 2


async def test_a_rolled_back_change_keeps_the_facts(read_models: CountingReadModels) -> None:
    opening, granting, revoking = history()
    await BusProjectionHandler(read_models, CaseFactsProjection(), service="planning").handle_batch(
        [opening, granting]
    )
    reader = CaseFactsReader(read_models)
    await reader.facts(CASE)

    async def failing_batch() -> None:
        async with read_models.transaction() as transaction:
            await CaseFactsProjection().apply(transaction, revoking)
            raise RuntimeError("the batch failed")

    with pytest.raises(RuntimeError):
        await failing_batch()

    assert consent_in_force(await reader.facts(CASE))
    assert read_models.reads == 1


async def test_own_entries_not_yet_projected_count_at_once(
    read_models: CountingReadModels,
) -> None:
    """Intake's own revocation, read from its store before the bus brings it back."""
    opening, granting, _ = history()
    await BusProjectionHandler(read_models, CaseFactsProjection(), service="planning").handle_batch(
        [opening, granting]
    )
    reader = CaseFactsReader(read_models)
    own = [entry for entry in map(entry_of, history()) if entry is not None]

    assert consent_in_force(await reader.facts(CASE, own_entries=own[:2]))
    assert not consent_in_force(await reader.facts(CASE, own_entries=own))


async def test_a_fold_that_raced_a_change_is_not_kept(tmp_path: Path) -> None:
    """A change committed while the facts were being read: that read may have seen the old
    document, so its fold is answered but not kept."""
    opening, granting, revoking = history()

    class ChangedWhileReading(CountingReadModels):
        async def get(self, collection: str, key: str) -> Document | None:
            document = await super().get(collection, key)
            if collection == FACTS and self.reads == 1:
                await feed.handle_batch([revoking])  # commits after the read above
            return document

    read_models = ChangedWhileReading(tmp_path / "read-models.db")
    try:
        feed = BusProjectionHandler(read_models, CaseFactsProjection(), service="planning")
        await feed.handle_batch([opening, granting])
        reader = CaseFactsReader(read_models)

        assert consent_in_force(await reader.facts(CASE))  # read before the revocation
        assert not consent_in_force(await reader.facts(CASE))
        assert read_models.reads == 2
    finally:
        await read_models.close()


async def test_a_reset_forgets_every_case(read_models: CountingReadModels) -> None:
    opening, granting, _ = history()
    projection = CaseFactsProjection()
    await BusProjectionHandler(read_models, projection, service="planning").handle_batch(
        [opening, granting]
    )
    reader = CaseFactsReader(read_models)
    await reader.facts(CASE)

    await read_models.reset(projection.name, projection.collections)

    assert not (await reader.facts(CASE)).known


async def test_without_a_watchable_store_every_read_folds_afresh(tmp_path: Path) -> None:
    read_models = UnwatchableReadModels(tmp_path / "shared.db")
    try:
        opening, granting, _ = history()
        await BusProjectionHandler(
            read_models, CaseFactsProjection(), service="planning"
        ).handle_batch([opening, granting])
        reader = CaseFactsReader(read_models)
        await reader.facts(CASE)
        await reader.facts(CASE)
        assert read_models.reads == 2
    finally:
        await read_models.close()


def test_the_cache_keeps_the_most_recently_read_cases() -> None:
    cache = CaseFactsCache(capacity=2)
    facts = {name: CachedFacts(unknown_case(name), {}) for name in ("a", "b", "c")}
    cache.keep("a", facts["a"], cache.changes)
    cache.keep("b", facts["b"], cache.changes)
    assert cache.get("a") is facts["a"]  # a is now the most recent

    cache.keep("c", facts["c"], cache.changes)

    assert cache.get("b") is None
    assert cache.get("a") is facts["a"]
    assert len(cache) == 2


def test_a_change_told_meanwhile_stops_a_fold_being_kept() -> None:
    cache = CaseFactsCache()
    before = cache.changes
    cache.forget("other-case")

    cache.keep("a", CachedFacts(unknown_case("a"), {}), before)

    assert cache.get("a") is None


async def test_replicas_sharing_postgresql_see_each_others_revocations() -> None:
    """Two replicas of a service, one read-model schema: the one that did not apply the
    revocation forgets the case once PostgreSQL delivers the committed change."""
    async with read_model_replicas("facts") as (applying, reading):
        opening, granting, revoking = history()
        feed = BusProjectionHandler(applying, CaseFactsProjection(), service="planning")
        CaseFactsReader(applying)  # every replica watches from its bootstrap on
        reader = CaseFactsReader(reading)
        await feed.handle_batch([opening, granting])
        deadline = asyncio.get_running_loop().time() + 10
        while not reading.watching():
            assert asyncio.get_running_loop().time() < deadline, "not listening"
            await asyncio.sleep(0.01)
        assert consent_in_force(await reader.facts(CASE))
        assert await reader.facts(CASE) is await reader.facts(CASE)  # kept

        await feed.handle_batch([revoking])

        deadline = asyncio.get_running_loop().time() + 10
        while consent_in_force(await reader.facts(CASE)):
            assert asyncio.get_running_loop().time() < deadline, "the revocation was not seen"
            await asyncio.sleep(0.01)
