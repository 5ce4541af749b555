"""Reading the current case view, with need-to-know checks on who asks."""

from __future__ import annotations

from dataclasses import replace

from events.commands import NotAllowed, NotFound
from events.envelope import Actor
from events.projections.port import Document
from services.planning.adapters.case_views import CaseFilter, CaseViews
from services.planning.domain.rules import (
    Action,
    acts_on_any_case,
    require_assignment,
    require_role,
)


async def case_view(views: CaseViews, actor: Actor, case_id: str) -> Document:
    require_role(actor, Action.VIEW_CASE)
    document = await views.get(case_id)
    if document is None:
        raise NotFound("case", case_id)
    require_assignment(actor, Action.VIEW_CASE, document["worker_id"])
    return document


async def list_cases(
    views: CaseViews, actor: Actor, where: CaseFilter, limit: int
) -> tuple[list[Document], bool]:
    """Matching cases (up to ``limit``) and whether more matched; workers see their own."""
    require_role(actor, Action.LIST_CASES)
    if not acts_on_any_case(actor, Action.LIST_CASES):
        if where.worker_id not in (None, actor.user_id):
            raise NotAllowed(actor.role.value, "list the cases of another worker")
        where = replace(where, worker_id=actor.user_id)
    return await views.find(where, limit)
