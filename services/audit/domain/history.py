"""A case's history seen on one of its two clocks: as it was, or as it was known.

Every event carries two instants: when it happened as stated by the actor (occurred-at) and
when the producing service made it durable (recorded-at). A home visit written up the next
day occurred before it was recorded, so "the case at T as it was" (occurred-at <= T) and "the
case at T as the agency knew it" (recorded-at <= T) can differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from events.catalog.access import RecordAccessDenied, RecordAccessed
from events.envelope import RecordedEvent, to_micros

SortKey = tuple[int, int, str, str, int]
"""(first clock, second clock, source, stream, sequence): a total order over a case's events.

The clocks are microseconds since the epoch; source, stream and sequence break ties between
events recorded in one append, and between services whose clocks read the same instant.
"""


class TimeBasis(StrEnum):
    OCCURRED = "occurred"
    """As it was: filter on occurred-at, order by occurred-at then recorded-at."""
    RECORDED = "recorded"
    """As it was known: filter and order on recorded-at."""


ACCESS_TYPES = frozenset({RecordAccessed.event_type, RecordAccessDenied.event_type})
"""The access records (accessed, denied): a case's access log, beside its own history."""


@dataclass(frozen=True)
class TimelineQuery:
    """Which of a case's events a timeline shows, on which clock. Every bound is inclusive and
    on ``basis``'s clock; ``event_types`` empty means all types."""

    basis: TimeBasis
    as_of: datetime | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_types: frozenset[str] = frozenset()
    actor_id: str | None = None
    without_accesses: bool = False
    """Leave out access events (``ACCESS_TYPES``: the access log lists them), unless
    ``event_types`` names them."""


@dataclass(frozen=True)
class PageCursor:
    """Where a page starts: after ``suffix`` (forward) or before it (``backward``)."""

    suffix: str
    backward: bool = False


@dataclass(frozen=True)
class IndexPage:
    entries: list[RecordedEvent]
    suffixes: list[str]
    more: bool
    """Another page lies beyond this one, in the direction it was read."""


def within_bytes(
    page: IndexPage, size_of: Callable[[RecordedEvent], int], budget: int, *, backward: bool
) -> IndexPage:
    """``page`` cut to the entries whose sizes add up to at most ``budget`` (one at least),
    counted from the side it was read from: the first ones forward, the last ones backward.
    Cut short, it says that more lie beyond, so the next page starts where it stopped."""
    order = range(len(page.entries) - 1, -1, -1) if backward else range(len(page.entries))
    kept = 0
    used = 0
    for index in order:
        used += size_of(page.entries[index])
        if kept and used > budget:
            break
        kept += 1
    if kept == len(page.entries):
        return page
    chosen = slice(len(page.entries) - kept, None) if backward else slice(0, kept)
    return IndexPage(page.entries[chosen], page.suffixes[chosen], more=True)


def moment_of(recorded: RecordedEvent, basis: TimeBasis) -> datetime:
    if basis is TimeBasis.OCCURRED:
        return recorded.metadata.occurred_at
    return recorded.recorded_at


def sort_key(recorded: RecordedEvent, basis: TimeBasis) -> SortKey:
    occurred = to_micros(recorded.metadata.occurred_at)
    stored = to_micros(recorded.recorded_at)
    first, second = (occurred, stored) if basis is TimeBasis.OCCURRED else (stored, occurred)
    return (first, second, recorded.metadata.source, recorded.stream, recorded.sequence)


def view(
    events: Iterable[RecordedEvent], basis: TimeBasis, as_of: datetime | None = None
) -> list[RecordedEvent]:
    """The events known on ``basis``'s clock up to ``as_of`` (inclusive), in that clock's order."""
    selected = events if as_of is None else (e for e in events if moment_of(e, basis) <= as_of)
    return sorted(selected, key=lambda recorded: sort_key(recorded, basis))
