"""Value types shared by several catalog events.

Sensitivity rule used across the catalog: free text that describes the client's health,
psyche, substance use, risks or private life is marked ``Sensitive`` (it may only be read on a
need-to-know basis and is encrypted per client), and so are codes whose value can reveal such
data (a need category of ``substance_use``, a service of kind ``addiction_counseling``).
Ids, dates, amounts and other codes are not.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from events.catalog.base import Identifier, NonEmptyStr, Sensitive, SensitiveText

Note = Annotated[str, Field(min_length=1, max_length=20_000)]
"""Free text that is not sensitive (operational notes, reasons given by agencies)."""

SensitiveNote = Annotated[SensitiveText, Field(min_length=1, max_length=20_000)]
"""Free text about the client's health, psyche, substance use, risks or private life."""

PositiveVersion = Annotated[int, Field(ge=1)]

_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day_as_published(value: object) -> object:
    # pydantic's lax ``date`` also takes 0, "0" and "2020-01-01T00:00:00", which the published
    # schema (``format: date``, RFC 3339's full-date) does not: a catalog day is written one way.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DAY.fullmatch(value):
        return value
    raise ValueError("must be a date written YYYY-MM-DD")


Day = Annotated[date, BeforeValidator(_day_as_published)]
"""A calendar day: a ``date`` or its YYYY-MM-DD text, nothing else (no time, no number)."""

_H = TypeVar("_H", bound=Hashable)


class CatalogValue(BaseModel):
    """Base of the small value objects nested inside events: immutable and strict about keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class NeedCategory(StrEnum):
    """Kinds of need recognised at intake, in planning and in referrals."""

    HOUSING = "housing"
    FOOD = "food"
    INCOME = "income"
    HEALTH = "health"
    MENTAL_HEALTH = "mental_health"
    SUBSTANCE_USE = "substance_use"
    DISABILITY = "disability"
    FAMILY_CARE = "family_care"
    COUNSELING = "counseling"
    PHYSICAL_THERAPY = "physical_therapy"
    HOME_CARE = "home_care"
    TRANSPORTATION = "transportation"
    SOCIALISATION = "socialisation"
    LEGAL = "legal"
    EDUCATION = "education"
    EMPLOYMENT = "employment"
    OTHER = "other"
    ERASED = "erased"
    """Only read back, never recorded: the category of a client whose data was erased
    (``EraseClient``; ``casetrail_platform.keys.fields``)."""


SensitiveNeedCategory = Annotated[NeedCategory, Sensitive]
"""A need category attached to a client: some values are health data (see module docstring)."""


class Urgency(StrEnum):
    """How soon a need must be met."""

    ROUTINE = "routine"
    SOON = "soon"
    URGENT = "urgent"
    IMMEDIATE = "immediate"


class Provider(CatalogValue):
    """An agency, organisation or professional that receives referrals or delivers services."""

    provider_id: Identifier
    name: NonEmptyStr


class Money(CatalogValue):
    """An amount in integer minor units of an ISO 4217 currency (e.g. 1250 EUR = 12.50 EUR)."""

    amount_minor_units: Annotated[int, Field(ge=0)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


_NOT_TWO_MINOR_UNIT_DIGITS = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
"""ISO 4217's minor-unit exponent of the currencies where it is not 2 (a yen has no minor
unit, a Kuwaiti dinar 1,000 fils)."""

_MINOR_UNIT_DIGITS = {
    currency: digits
    for digits, currencies in _NOT_TWO_MINOR_UNIT_DIGITS.items()
    for currency in currencies.split()
}


def in_major_units(money: Money) -> str:
    """``money`` written in its currency's major unit ("1500.00 USD", "150000 JPY",
    "450.123 KWD"), as people read an amount: not every currency has cents."""
    digits = _MINOR_UNIT_DIGITS.get(money.currency, 2)
    if digits == 0:
        return f"{money.amount_minor_units} {money.currency}"
    whole, fraction = divmod(money.amount_minor_units, 10**digits)
    return f"{whole}.{fraction:0{digits}d} {money.currency}"


ERASURE_MARKERS = frozenset({"erased", "[erased]"})
"""What an erased client's sensitive values read as (``casetrail_platform.keys.fields``): a list of
them may hold the marker several times."""


def require_unique(values: Iterable[_H], what: str) -> None:
    """Raise a ``ValueError`` naming the positions of the first repeat (pydantic reports it per
    field). Never the value: the message reaches dead letters and logs, and the value may be
    sensitive (a need category of ``substance_use``)."""
    first_at: dict[_H, int] = {}
    for index, value in enumerate(values):
        if value in ERASURE_MARKERS:
            continue
        earlier = first_at.setdefault(value, index)
        if earlier != index:
            raise ValueError(f"{what} must be unique; entries {earlier} and {index} repeat")
