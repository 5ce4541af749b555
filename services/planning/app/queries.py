"""Reading the current case view and lists of cases; who may see them is the access policy's
decision (``casetrail_platform.policy``), taken by the entrypoint on the case's facts."""

from __future__ import annotations

from dataclasses import replace

from casetrail_platform.commands import NotAllowed, NotFound
from casetrail_platform.projections.port import Document
from events.envelope import Actor
from services.planning.adapters.case_views import CaseFilter, CaseViews
from services.planning.domain.rules import Action, acts_on_any_case, require_role


async def case_view(views: CaseViews, case_id: str) -> Document:
    document = await views.get(case_id)
    if document is None:
        raise NotFound("case", case_id)
    return document


async def list_cases(
    views: CaseViews, actor: Actor, where: CaseFilter, limit: int
) -> tuple[list[Document], bool]:
    """Matching cases (up to ``limit``) and whether more matched; workers see their own (the
    policy then decides on each case listed)."""
    require_role(actor, Action.LIST_CASES)
    if not acts_on_any_case(actor, Action.LIST_CASES):
        if where.worker_id not in (None, actor.user_id):
            raise NotAllowed(actor.role.value, "list the cases of another worker")
        where = replace(where, worker_id=actor.user_id)
    return await views.find(where, limit)
