"""The policy facts of the cases read lately, kept in memory and never stale.

Every read decides on its case's facts. Fetching and folding them from the read model on each
read cost a query, a JSON decode and a fold per read (bench/RESULTS.md, issue 9). This cache
keeps the folded facts of the ``capacity`` cases read most recently. The read model store tells
it, after each commit, which cases' facts changed (``ReadModelStore.watch``); such a case is
forgotten, and the next read folds it afresh. A fold that raced a change is not kept: each
change bumps a counter, and a fold is stored only if the counter did not move while it was
read. A store that cannot see every writer (one shared by replicas) gets no cache at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from casetrail_platform.policy.facts import CaseFacts, Entry

DEFAULT_CAPACITY = 5_000
"""Cases whose facts are kept (a few KiB each)."""


@dataclass(frozen=True, slots=True)
class CachedFacts:
    facts: CaseFacts
    entries: Mapping[str, Entry]
    """The entries ``facts`` was folded from, by event id."""


class CaseFactsCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._cases: OrderedDict[str, CachedFacts] = OrderedDict()
        self._changes = 0

    @property
    def changes(self) -> int:
        """How many changes were told so far: note it before reading, pass it to ``keep``."""
        return self._changes

    def get(self, case_id: str) -> CachedFacts | None:
        cached = self._cases.get(case_id)
        if cached is not None:
            self._cases.move_to_end(case_id)
        return cached

    def keep(self, case_id: str, cached: CachedFacts, changes_before_reading: int) -> None:
        """Keep a fold read after ``changes_before_reading`` changes, unless one came since."""
        if changes_before_reading != self._changes:
            return
        self._cases[case_id] = cached
        self._cases.move_to_end(case_id)
        while len(self._cases) > self._capacity:
            self._cases.popitem(last=False)

    def forget(self, case_id: str | None) -> None:
        """A committed change to the case's facts (``None``: to any case's)."""
        self._changes += 1
        if case_id is None:
            self._cases.clear()
        else:
            self._cases.pop(case_id, None)

    def __len__(self) -> int:
        return len(self._cases)
