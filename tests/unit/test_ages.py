"""Ages on the agency's calendar (casetrail_platform/ages.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from casetrail_platform.ages import age_on, agency_time_zone, agency_today

LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def test_an_agency_in_utc_minus_8_is_still_on_the_eve_of_the_birthday() -> None:
    # 17:00 in Los Angeles on 14 January is already 15 January in UTC.
    evening = datetime(2027, 1, 15, 1, 0, tzinfo=UTC)
    born = date(1950, 1, 15)

    assert agency_today(LOS_ANGELES, evening) == date(2027, 1, 14)
    assert age_on(born, agency_today(LOS_ANGELES, evening)) == 76
    # On UTC's date the client would be a year older than they are where the agency decides.
    assert age_on(born, agency_today(UTC, evening)) == 77


def test_a_birthday_on_29_february_counts_from_1_march() -> None:
    born = date(1960, 2, 29)
    assert age_on(born, date(2027, 2, 28)) == 66
    assert age_on(born, date(2027, 3, 1)) == 67


def test_the_time_zone_is_configured_by_its_iana_name() -> None:
    assert agency_time_zone({}) is UTC
    assert agency_time_zone({"CASETRAIL_AGENCY_TIME_ZONE": ""}) is UTC
    assert agency_time_zone({"CASETRAIL_AGENCY_TIME_ZONE": "UTC"}) is UTC
    assert agency_time_zone({"CASETRAIL_AGENCY_TIME_ZONE": "America/Los_Angeles"}) == LOS_ANGELES
    for wrong in ("Mars/Olympus_Mons", "../etc/passwd", "-08:00"):
        with pytest.raises(ValueError, match="CASETRAIL_AGENCY_TIME_ZONE"):
            agency_time_zone({"CASETRAIL_AGENCY_TIME_ZONE": wrong})
