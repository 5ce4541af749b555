"""The policy facts kept before v2 are retired at every service's start: a consent's entry
there did not keep its recipient's kind, so it covered no one until an operator replayed the
topic by hand (the upgrade note of stop 40). A new name and collections make an upgraded
service build the facts again from the bus by itself."""

from __future__ import annotations

from casetrail_platform.policy.projection import (
    RETIRED,
    RETIRED_COLLECTIONS,
    CaseFactsProjection,
    retire_old_facts_layout,
)
from casetrail_platform.projections.port import ReadModelStore


async def test_the_facts_kept_without_recipient_kinds_are_retired_at_start(
    read_models: ReadModelStore,
) -> None:
    consent = {"consent_id": "c-1", "recipient_id": "agency-7", "purpose": "coordination"}
    old = {"case_id": "case-o", "entries": [{"type": "consent.granted", **consent}]}
    async with read_models.transaction() as transaction:
        for collection in RETIRED_COLLECTIONS:
            await transaction.put(collection, "case-o", old)
        await transaction.set_position(RETIRED, 1)

    await retire_old_facts_layout(read_models)

    for collection in RETIRED_COLLECTIONS:
        assert [item async for item in read_models.scan(collection)] == [], collection
    assert await read_models.applied_position(RETIRED) == 0
    projection = CaseFactsProjection()
    assert projection.name != RETIRED
    assert not set(RETIRED_COLLECTIONS) & set(projection.collections)
