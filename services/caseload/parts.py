"""The all-worker views' parts: what one process reads of a view from its own tables, and the
view merged from the parts of every process holding partitions of them (``gathering``).

A part states the partitions it was read from, so the merge can tell a whole view from one
missing a partition or counting one twice (``require_whole``); it names at most the view's
``limit`` cases, in the view's order, with ``truncated`` when more matched: the merged view's
first ``limit`` cases are among them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import date

from pydantic import BaseModel, ConfigDict

from services.caseload import queries
from services.caseload.domain import OverdueFollowUp
from services.caseload.processor import CaseloadApp
from services.caseload.routing import owner_unavailable

log = logging.getLogger(__name__)


class Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: frozenset[int]
    """The ``held-cases`` partitions the part was read from: its process's assignment."""
    truncated: bool
    """More cases matched in them than the part names."""

    def pinned(self) -> dict[str, str]:
        """What the other parts are read with besides the caller's query."""
        return {}


class CaseloadsPart(Part):
    workers: dict[str, int]
    """Open cases per worker (``queries.caseloads``)."""
    unassigned: tuple[str, ...]


class OverduePart(Part):
    today: date
    overdue: tuple[OverdueFollowUp, ...]

    def pinned(self) -> dict[str, str]:
        # Every part counts from the same day, the asker's (midnight may pass meanwhile).
        return {"today": self.today.isoformat()}


def caseloads_part(app: CaseloadApp, partitions: frozenset[int], limit: int) -> CaseloadsPart:
    unassigned = queries.unassigned(app)
    return CaseloadsPart(
        partitions=partitions,
        truncated=len(unassigned) > limit,
        workers=queries.caseloads(app),
        unassigned=unassigned[:limit],
    )


def overdue_part(
    app: CaseloadApp, partitions: frozenset[int], today: date, limit: int
) -> OverduePart:
    found = queries.overdue(app, today)
    return OverduePart(
        partitions=partitions,
        truncated=len(found) > limit,
        today=today,
        overdue=tuple(found[:limit]),
    )


def require_whole(parts: Sequence[Part], partitions: int) -> None:
    """``Refused`` 503 ``OWNER_UNAVAILABLE`` unless ``parts`` were read from each of the
    ``partitions`` exactly once: a process missing, or parts read under different assignments
    (a rebalance seen at different moments), would show part of the view as if it were all."""
    read = Counter(p for part in parts for p in part.partitions)
    if set(read) != set(range(partitions)) or any(times > 1 for times in read.values()):
        log.warning(
            "caseload: the parts of an all-worker view cover partitions %s of %d"
            " (a process missing, or a rebalance)",
            sorted(read.elements()),
            partitions,
        )
        raise owner_unavailable()


def merged_caseloads(
    parts: Sequence[CaseloadsPart], limit: int
) -> tuple[dict[str, int], tuple[str, ...], bool]:
    """The open cases per worker, the first ``limit`` unassigned ones, and whether more are."""
    workers: Counter[str] = Counter()
    for part in parts:
        workers.update(part.workers)
    unassigned = sorted(case for part in parts for case in part.unassigned)
    truncated = len(unassigned) > limit or any(part.truncated for part in parts)
    return dict(sorted(workers.items())), tuple(unassigned[:limit]), truncated


def merged_overdue(
    parts: Sequence[OverduePart], limit: int
) -> tuple[tuple[OverdueFollowUp, ...], bool]:
    """The first ``limit`` overdue follow-ups, oldest due date first, and whether more are."""
    found = sorted(follow_up for part in parts for follow_up in part.overdue)
    truncated = len(found) > limit or any(part.truncated for part in parts)
    return tuple(found[:limit]), truncated
