"""Eligibility decides the client's age on the agency's date, in its configured time zone,
not on UTC's: a coordination service whose agency is a day behind (or ahead of) UTC right now
decides the age the client has there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from casetrail_platform.ages import age_on, agency_today
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.values import NeedCategory
from services.coordination.app.handlers.running import Dependencies
from tests.unit.coordination.rpc import eligibility, recorded_reasons, usd
from tests.unit.coordination.support import IntakeFeed, carried_by, sample_agency

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub


def _zone_on_another_day() -> tzinfo:
    """A zone whose date differs from UTC's now: UTC-12 before noon UTC, else UTC+14 (from
    10:00 UTC it is already tomorrow there)."""
    return ZoneInfo("Etc/GMT+12") if datetime.now(UTC).hour < 12 else ZoneInfo("Etc/GMT-14")


@pytest.fixture
def zone() -> tzinfo:
    return _zone_on_another_day()


@pytest.fixture
def deps(store: SqliteEventStore, read_models: SqliteReadModelStore, zone: tzinfo) -> Dependencies:
    return Dependencies(store, read_models, sample_agency(), time_zone=zone)


async def test_the_age_is_the_one_on_the_agencys_date(
    stub: Stub, intake: IntakeFeed, zone: tzinfo, store: SqliteEventStore
) -> None:
    local, utc = agency_today(zone), datetime.now(UTC).date()
    if abs((local - utc).days) != 1:  # the hour turned between choosing the zone and now
        pytest.skip("the zone's date met UTC's while the test started")
    # Born 68 years before the later of the two dates (a leap year stays one): a year older on
    # that date than on the other.
    birthday = max(local, utc)
    born = birthday.replace(year=birthday.year - 68)
    await intake.register_client("client-1", born)
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    await carried_by(store, "case-1", "user-social_worker", Role.SOCIAL_WORKER)

    decided = await stub.DetermineEligibility(
        eligibility(
            "home-care-medicaid-waiver", monthly_income=usd(180_000), residence="us-ca-alameda"
        )
    )

    age = age_on(born, local)
    assert age != age_on(born, utc)
    assert (await recorded_reasons(stub))[0][0] == f"age {age} is at least the minimum of 65"
    # And a decision valid for a year counts from the agency's date.
    assert decided.valid_until == (local + timedelta(days=365)).isoformat()
