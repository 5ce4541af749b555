"""The disclosure index the accounting of disclosures reads: only disclosures go in, decided on
the read's data as JSON exactly as ``disclosure_of`` decides on the decoded event, and a page
of several cases is one key-range read per case merged in the accounting's order."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.access import AccessPurpose, RecordAccessed, RecordSection
from events.catalog.base import Role
from events.catalog.referrals import ReferralMade
from events.catalog.values import NeedCategory, Provider, Urgency
from events.envelope import Actor, RecordedEvent, to_micros
from events.registry import EventRegistry
from services.audit.adapters.disclosure_index import (
    DISCLOSURES,
    DisclosureIndexProjection,
    ReadModelDisclosureIndex,
)
from services.audit.domain.disclosures import BREAK_GLASS_RULE, disclosure_of, read_is_disclosure
from tests.unit.audit.support import DAY, T0, coordination

HOME = "eastbay-dss"
PARTNER = "harbour-services"


def read(
    case_id: str,
    reader: str,
    role: Role,
    agency: str | None,
    purpose: AccessPurpose,
    *,
    rule: str = "some-rule",
    emergency: str | None = None,
) -> RecordAccessed:
    return RecordAccessed(
        case_id=case_id,
        accessor_id=reader,
        accessor_role=role,
        accessor_agency_id=agency,
        purpose=purpose,
        sections=(RecordSection.IDENTITY,),
        rule=rule,
        policy_version="2026.12-2",
        emergency_access_id=emergency,
    )


def test_the_index_decides_on_the_json_as_the_accounting_does_on_the_event() -> None:
    """Every role, agency (own, another, none named), purpose, emergency and rule."""
    producer = coordination()
    combinations = itertools.product(
        Role,
        (HOME, PARTNER, None),
        AccessPurpose,
        (None, "emergency-1"),
        ("agency-coordinator", BREAK_GLASS_RULE),
    )
    disclosures = 0
    for role, agency, purpose, emergency, rule in combinations:
        recorded = producer.record(
            read("case-1", "reader-1", role, agency, purpose, rule=rule, emergency=emergency),
            occurred_at=T0,
        )
        expected = disclosure_of(recorded, HOME) is not None
        assert read_is_disclosure(json.loads(recorded.data), HOME) == expected, (
            role,
            agency,
            purpose,
            emergency,
            rule,
        )
        disclosures += expected
    assert 0 < disclosures < len(Role) * 3 * len(AccessPurpose) * 4


def referral(case_id: str, provider: str) -> ReferralMade:
    return ReferralMade(
        case_id=case_id,
        referral_id=f"ref-{provider}",
        provider=Provider(provider_id=provider, name=provider),
        need_category=NeedCategory.HOME_CARE,
        service="Morning care",
        urgency=Urgency.SOON,
        reason="Cannot dress alone",
    )


async def project(read_models: SqliteReadModelStore, events: list[RecordedEvent]) -> None:
    handler = BusProjectionHandler(read_models, DisclosureIndexProjection(HOME), service="audit")
    await handler.handle_batch(events)


async def test_only_disclosures_are_indexed_and_a_redelivery_changes_nothing(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    office = coordination("case-1")
    worker = Actor("worker-ana", Role.SOCIAL_WORKER)
    events = [
        office.record(
            read("case-1", "worker-ana", Role.SOCIAL_WORKER, HOME, AccessPurpose.DIRECT_CARE),
            occurred_at=T0 + timedelta(minutes=minute),
            actor=worker,
        )
        for minute in range(50)
    ]
    partner_read = office.record(
        read("case-1", "p-1", Role.PARTNER_AGENCY, PARTNER, AccessPurpose.COORDINATION),
        occurred_at=T0 + DAY,
    )
    own_referral = office.record(referral("case-1", HOME), occurred_at=T0 + DAY)
    outside_referral = office.record(referral("case-1", PARTNER), occurred_at=T0 + 2 * DAY)
    await project(read_models, [*events, partner_read, own_referral, outside_referral])
    await BusProjectionHandler(read_models, DisclosureIndexProjection(HOME), service="audit")(
        partner_read
    )

    index = ReadModelDisclosureIndex(read_models, registry)
    assert await index.count("case-1", to_micros(T0), to_micros(T0 + 3 * DAY)) == 2
    async with read_models.transaction() as transaction:  # keyed by event: no tracking rows
        ids = [e.event_id for e in events]
        assert await transaction.already_applied(DisclosureIndexProjection.name, ids) == set()
    rows = await read_models.find(DISCLOSURES)
    assert sorted(document["event"]["id"] for document in rows) == sorted(
        [str(partner_read.event_id), str(outside_referral.event_id)]
    )


async def test_a_page_merges_the_cases_in_time_order_within_inclusive_bounds(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    """Two cases' partner reads interleaved by the hour; the period's bounds are moments of
    two of them (both counted); pages of 3 follow one another with the last key as cursor."""
    producers = {case_id: coordination(case_id) for case_id in ("case-a", "case-b")}
    recorded = [
        producers[case_id].record(
            read(case_id, "p-1", Role.PARTNER_AGENCY, PARTNER, AccessPurpose.COORDINATION),
            occurred_at=T0 + timedelta(hours=hour),
        )
        for hour, case_id in enumerate(["case-a", "case-b"] * 5)
    ]
    await project(read_models, recorded)
    index = ReadModelDisclosureIndex(read_models, registry)
    start, end = to_micros(T0 + timedelta(hours=1)), to_micros(T0 + timedelta(hours=8))
    counts = [await index.count(case_id, start, end) for case_id in ("case-a", "case-b")]
    assert counts == [4, 4]

    pages: list[list[RecordedEvent]] = []
    after = None
    while True:
        events, more = await index.page(["case-b", "case-a"], start, end, after, 3)
        pages.append(events)
        if not more:
            break
        last = events[-1]
        after = (to_micros(last.metadata.occurred_at), str(last.event_id))
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [e.event_id for page in pages for e in page] == [r.event_id for r in recorded[1:9]]
    first = pages[0][0]
    assert isinstance(first.event, RecordAccessed)
    assert first.event == recorded[1].event


async def test_a_disclosure_dated_back_by_its_actor_counts_when_it_was_recorded(
    read_models: SqliteReadModelStore, registry: EventRegistry
) -> None:
    # A referral entered now but dated three days back was disclosed now: the accounting of
    # today's period must list it, and a period the actor's date falls in must not.
    office = coordination("case-1")
    recorded_at = T0 + 3 * DAY
    backdated = office.record(referral("case-1", PARTNER), occurred_at=T0, recorded_at=recorded_at)
    await project(read_models, [backdated])

    index = ReadModelDisclosureIndex(read_models, registry)
    assert await index.count("case-1", to_micros(recorded_at), to_micros(recorded_at)) == 1
    assert await index.count("case-1", to_micros(T0), to_micros(T0 + DAY)) == 0
    [listed], more = await index.page(["case-1"], to_micros(T0), to_micros(recorded_at), None, 9)
    disclosure = disclosure_of(listed, HOME)
    assert disclosure is not None
    assert (disclosure.disclosed_at, more) == (recorded_at, False)
