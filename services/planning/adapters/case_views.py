"""The current case view read model: its projection (fed from the bus) and its queries.

Two collections: ``case_views`` (one document per case, see ``case_document``) and
``follow_ups``, an index of open cases by next follow-up date, keyed ``<date>|<case id>`` so
that a scan in key order meets the most overdue cases first and stops at the given date.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo

from casetrail_platform.projections.erasure import CaseErasure, erased_marks, scrub, scrubbing
from casetrail_platform.projections.port import (
    Document,
    DocumentTransaction,
    Projection,
    ReadModelStore,
    RetiredLayout,
)
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from events.envelope import RecordedEvent
from services.planning.adapters.case_document import (
    EVENT_TYPES,
    OPEN_REFERRAL_STATUSES,
    apply_event,
    new_document,
    settle_erased,
    special_entry_ids,
)
from services.planning.adapters.staff import STAFF, record_worker, staff_members
from services.planning.domain.model import UNKNOWN_CASE, CaseFacts, StaffMember

CASE_VIEWS = "case_views_v7"
FOLLOW_UPS = "follow_ups_v7"

RETIRED = "case_view_v2"
RETIRED_COLLECTIONS = ("case_views_v2", "follow_ups_v2", erased_marks("case_views_v2"))
"""The projection before ``v3`` and its collections: its documents kept one contact, the
latest by the closures delivered so far, so a closure delivered late (dead-lettered and
replayed) left a reopened case without the follow-up its new cycle's contact set, which no
later event tells again. ``retire_old_layout`` deletes them at planning's start, and the
projection again later (``Projection.retired``)."""
FIRST_RETIRED = "case_view"
FIRST_RETIRED_COLLECTIONS = ("case_views", "follow_ups", erased_marks("case_views"))
"""The projection before ``v2``: its documents did not keep the case's last reopening (the
episode an assessment belongs to). Deleted too, for a deployment upgraded from before ``v2``."""
THIRD_RETIRED = "case_view_v3"
THIRD_RETIRED_COLLECTIONS = ("case_views_v3", "follow_ups_v3", erased_marks("case_views_v3"))
"""The projection before ``v4``: its plans' last evaluation and its goals' latest ratings were
those of the evaluation recorded last, so one written up late, dated before, replaced the
latest's, which no later event tells again. Deleted at planning's start too."""
FOURTH_RETIRED = "case_view_v4"
FOURTH_RETIRED_COLLECTIONS = ("case_views_v4", "follow_ups_v4", erased_marks("case_views_v4"))
"""The projection before ``v5``: its plans' versions went up by one on the first change after
an agreement only, and its documents do not keep the changes the versions are now counted from
(``case_document._settle``). Deleted at planning's start too."""
FIFTH_RETIRED = "case_view_v5"
FIFTH_RETIRED_COLLECTIONS = ("case_views_v5", "follow_ups_v5", erased_marks("case_views_v5"))
"""The projection before ``v6``: its plans do not keep which goal each change was of, so a
reader not entitled to sensitive values could not be shown versions without the changes of
the goals withheld from them (``case_document.plan_versions``). Deleted at planning's start
too."""
LATEST_RETIRED = "case_view_v6"
LATEST_RETIRED_COLLECTIONS = ("case_views_v6", "follow_ups_v6", erased_marks("case_views_v6"))
"""The projection before ``v7``: its plans do not keep which goals each agreement named, so a
reader not entitled to sensitive values was shown an agreement to goals withheld from them
alone (``case_document.plan_versions``, ``stage``). Deleted at planning's start too."""
REFERRED_STATUSES = frozenset({"accepted", "completed"})
"""A referral in either has an outside provider taking the need on."""
NEED_CODES = frozenset(need.value for need in NeedCategory)


class CaseViewProjection(Projection):
    """Every service's case events, including planning's own as they come back on the bus."""

    name = "case_view_v7"
    """v7: a new name and new collections, so a deployment builds it again from the bus
    (``LATEST_RETIRED``)."""
    collections = (CASE_VIEWS, FOLLOW_UPS, STAFF, erased_marks(CASE_VIEWS))
    retired = (
        RetiredLayout(FIRST_RETIRED, FIRST_RETIRED_COLLECTIONS),
        RetiredLayout(RETIRED, RETIRED_COLLECTIONS),
        RetiredLayout(THIRD_RETIRED, THIRD_RETIRED_COLLECTIONS),
        RetiredLayout(FOURTH_RETIRED, FOURTH_RETIRED_COLLECTIONS),
        RetiredLayout(FIFTH_RETIRED, FIFTH_RETIRED_COLLECTIONS),
        RetiredLayout(LATEST_RETIRED, LATEST_RETIRED_COLLECTIONS),
    )
    event_types = EVENT_TYPES

    def __init__(self, time_zone: tzinfo = UTC) -> None:
        """``time_zone``: the agency's, whose dates the view shows (``apply_event``)."""
        self._time_zone = time_zone

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        if isinstance(recorded.event, CaseAssigned | CaseReassigned):
            # With the case's worker, in one transaction: a command that finds the worker
            # assigned finds their credentials too.
            await record_worker(transaction, recorded.event, recorded)
        case_id = getattr(recorded.event, "case_id", None)
        if not isinstance(case_id, str):
            return
        document = await transaction.get(CASE_VIEWS, case_id) or new_document(case_id)
        due_before = document["next_follow_up_due"]
        if not apply_event(document, recorded, self._time_zone):
            return
        await ERASURE.settle(transaction, case_id, document)
        await transaction.put(CASE_VIEWS, case_id, document)
        due_after = document["next_follow_up_due"]
        if due_after != due_before:
            if due_before is not None:
                await transaction.delete(FOLLOW_UPS, _follow_up_key(due_before, case_id))
            if due_after is not None:
                await transaction.put(
                    FOLLOW_UPS,
                    _follow_up_key(due_after, case_id),
                    {"case_id": case_id, "due": due_after},
                )

    async def erase(self, transaction: DocumentTransaction, erased: ClientErased) -> None:
        await ERASURE.erase(transaction, erased)


SENSITIVE_CODES = frozenset({"presented_needs", "category", "needs", "need_category"})
SENSITIVE_TEXTS = frozenset(
    {"statement", "objectives", "description", "service", "criteria", "aftercare"}
)
"""The keys of a case document (``case_document``) under which the catalog's sensitive values
are copied, at any depth: codes (need categories) and free text."""
SERVICE_CODES = frozenset({"kind"})
"""The key of a service's kind, scrubbed in the case's services only: a goal's task names its
owner's ``kind`` too (the worker, the client, family: no special data, never sealed), which
scrubbed at any depth read as the marker for good."""
_FORGET_VALUES = scrubbing(codes=SENSITIVE_CODES, texts=SENSITIVE_TEXTS, settle=settle_erased)


def _forget(document: Document) -> None:
    scrub(document["services"], codes=SERVICE_CODES)
    _FORGET_VALUES(document)


ERASURE = CaseErasure(CASE_VIEWS, _forget)


async def retire_old_layout(read_models: ReadModelStore) -> None:
    """Delete what the projections before ``v7`` left (nothing once done: a no-op after)."""
    # Their documents held goals, tasks and needs in the clear: no copy stays in the files.
    await read_models.retire(CaseViewProjection.retired)


def _moment(stored: str | None) -> datetime | None:
    return None if stored is None else datetime.fromisoformat(stored)


def _follow_up_key(due: str, case_id: str) -> str:
    return f"{due}|{case_id}"


@dataclass(frozen=True, slots=True)
class CaseFilter:
    worker_id: str | None = None
    status: str | None = None
    stage: str | None = None
    need: str | None = None
    overdue_before: date | None = None
    """Open cases whose next follow-up is due strictly before this day."""
    special: bool = True
    """Whether ``stage`` is matched as shown to a reader entitled to sensitive values, or as
    shown to one who is not (``case_document.stage``)."""

    def equals(self) -> dict[str, str | int | bool]:
        wanted: dict[str, str | int | bool] = {"opened": True}
        stage = "stage" if self.special else "stage_without_special"
        for field, value in (
            ("worker_id", self.worker_id),
            ("status", self.status),
            (stage, self.stage),
        ):
            if value is not None:
                wanted[field] = value
        return wanted

    def contains(self) -> dict[str, str]:
        return {} if self.need is None else {"needs": self.need}

    def matches(self, document: Document) -> bool:
        equal = all(document.get(field) == value for field, value in self.equals().items())
        return equal and (self.need is None or self.need in document["needs"])


class CaseViews:
    """Reads of the case view read model."""

    def __init__(self, read_models: ReadModelStore) -> None:
        self._read_models = read_models

    async def get(self, case_id: str) -> Document | None:
        document = await self._read_models.get(CASE_VIEWS, case_id)
        return document if document is not None and document["opened"] else None

    async def assignment_seen(self, case_id: str) -> int:
        """The sequence in coordination's case stream of the newest assignment the case view
        applied (0: none, or a view kept before it noted one): the policy's facts, another
        consumer group, may not have it yet."""
        document = await self._read_models.get(CASE_VIEWS, case_id)
        return 0 if document is None else int(document.get("sequences", {}).get("worker", 0))

    async def facts(self, case_id: str) -> CaseFacts:
        document = await self.get(case_id)
        if document is None:
            return UNKNOWN_CASE
        return CaseFacts(
            known=True,
            opened_at=_moment(document.get("opened_at")),
            worker_id=document["worker_id"],
            assessed=document["assessed"],
            # Not in a document kept before they were: not known, so not checked.
            assessed_at=_moment(document.get("assessed_at")),
            assigned_at=_moment(document.get("assigned_at")),
            reopens=document["reopens"],
            reopened_at=_moment(document["reopened_at"]),
            scheduled_service_ids=tuple(document["scheduled_service_ids"]),
            running_referral_ids=tuple(
                r["referral_id"]
                for r in document["referrals"]
                if r["status"] in OPEN_REFERRAL_STATUSES
            ),
            referred_needs=frozenset(
                NeedCategory(r["need_category"])
                for r in document["referrals"]
                # An erased client's need categories are markers: no need is known then.
                if r["status"] in REFERRED_STATUSES and r["need_category"] in NEED_CODES
            ),
            special_entry_ids=special_entry_ids(document),
        )

    async def staff(self, worker_ids: Iterable[str]) -> dict[str, StaffMember]:
        """The workers of ``worker_ids`` planning knows of (from case assignments)."""
        return await staff_members(self._read_models, worker_ids)

    async def find(self, where: CaseFilter, limit: int) -> tuple[list[Document], bool]:
        """Up to ``limit`` matching documents, and whether more matched."""
        if where.overdue_before is not None:
            return await self._overdue(where, where.overdue_before, limit)
        found = await self._read_models.find(
            CASE_VIEWS, equals=where.equals(), contains=where.contains(), limit=limit + 1
        )
        return found[:limit], len(found) > limit

    async def _overdue(
        self, where: CaseFilter, before: date, limit: int
    ) -> tuple[list[Document], bool]:
        cutoff = before.isoformat()
        found: list[Document] = []
        async for _, entry in self._read_models.scan(FOLLOW_UPS):
            if entry["due"] >= cutoff:
                break
            document = await self._read_models.get(CASE_VIEWS, entry["case_id"])
            if document is not None and where.matches(document):
                if len(found) == limit:
                    return found, True
                found.append(document)
        return found, False
