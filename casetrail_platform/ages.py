"""Ages from dates of birth, on the agency's calendar: one rule for every service that decides
on one (intake's plausibility of a date of birth, coordination's eligibility and licences).

"Today" is the agency's date, not UTC's: an agency in UTC-8 deciding at 17:00 on the eve of a
client's birthday is already on the birthday in UTC, and the client is not a year older yet.
The agency's IANA time zone is configured once (``CASETRAIL_AGENCY_TIME_ZONE``, default UTC)
and every service of the agency uses the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIME_ZONE_VARIABLE = "CASETRAIL_AGENCY_TIME_ZONE"


def age_on(birth: date, on: date) -> int:
    """Whole years completed on ``on``: a birthday counts from its day (29 February from
    1 March in other years)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def agency_time_zone(environ: Mapping[str, str]) -> tzinfo:
    """The agency's time zone from ``CASETRAIL_AGENCY_TIME_ZONE`` (an IANA name such as
    ``America/Los_Angeles``; unset or empty: UTC). An unknown name stops the service at start
    rather than deciding ages on the wrong day."""
    name = environ.get(TIME_ZONE_VARIABLE, "").strip()
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{TIME_ZONE_VARIABLE} must name an IANA time zone such as America/Los_Angeles"
        ) from None


def agency_today(zone: tzinfo, now: datetime | None = None) -> date:
    """The agency's date at ``now`` (default: the server's clock, never a caller's stated
    moment, which may be backdated)."""
    return (now or datetime.now(UTC)).astimezone(zone).date()
