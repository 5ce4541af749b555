"""Reading the current case view and lists of cases. Who may see them is the access policy's
decision (``casetrail_platform.policy``): a role no rule lets read is refused before anything
is looked up, each case is decided on its facts, and every refusal is recorded."""

from __future__ import annotations

from dataclasses import replace

from casetrail_platform.commands import NotFound
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import refusal
from casetrail_platform.policy.facts import CaseFacts
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.matrix import RULES
from casetrail_platform.policy.vocabulary import Action, Decision, Relationship, Sensitivity
from casetrail_platform.projections.port import Document
from events.catalog.access import AccessPurpose, SensitiveCategory
from services.planning.adapters.case_document import stage
from services.planning.adapters.case_views import CaseFilter, CaseViews

CASE_LIST = "case-list"
"""Where a list refused outright is recorded: it names no case (audit's access log of this id
lists such refusals)."""

SENSITIVE_FILTER_RULE = "sensitive-filter-not-permitted"
"""The rule a list filtered on a sensitive need is refused under, when the caller's rules
withhold sensitive values (its ErrorInfo reason, upper-cased)."""

_SENSITIVE_NEEDS = frozenset(category.value for category in SensitiveCategory)


async def case_view(
    views: CaseViews,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    case_id: str,
) -> tuple[Document, Decision]:
    """The case view and the decision allowing it. Decided before the view is looked up, so
    a refused caller gets the same refusal whether or not the case exists."""
    await access.require_role(principal, Action.READ_CASE, purpose, case_id)
    facts = await access.reader_facts(
        principal, Action.READ_CASE, purpose, case_id, subject=case_id
    )
    decision = await access.authorize(principal, Action.READ_CASE, purpose, facts)
    document = await views.get(case_id)
    if document is None:
        raise NotFound("case", case_id)
    return document, decision


async def list_cases(
    views: CaseViews,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    where: CaseFilter,
    limit: int,
) -> tuple[list[tuple[Document, Decision]], bool]:
    """The matching cases the policy lets ``principal`` see (up to ``limit``), each with its
    decision, and whether more matched. A case the caller may not see is left out, not refused;
    a list the caller may not ask for at all (another agency's, ``require_agency_reader``, or a
    role no rule lets list) is refused and recorded under ``CASE_LIST``. The
    answer is said truncated only when every case found was listed, as intake's duplicate
    search: otherwise the flag would count cases it leaves out (another team's supervisor
    filtering on a worker of that team, shown none, learning that more than ``limit`` match)."""
    await access.require_agency_reader(principal, Action.LIST_CASES, purpose, CASE_LIST)
    await access.require_role(principal, Action.LIST_CASES, purpose, CASE_LIST)
    sensitive_filter = where.need in _SENSITIVE_NEEDS
    if sensitive_filter and not _may_see_sensitive_values(principal, purpose):
        refused = refusal(SENSITIVE_FILTER_RULE)
        await access.refuse(principal, Action.LIST_CASES, purpose, CASE_LIST, refused)
    if _lists_own_cases_only(principal):
        if where.worker_id not in (None, principal.subject):
            # The policy's answer for a case that worker carries: theirs, so not the caller's.
            carried = CaseFacts(CASE_LIST, worker_id=where.worker_id)
            decided = access.decide(principal, Action.LIST_CASES, purpose, carried)
            await access.refuse(principal, Action.LIST_CASES, purpose, CASE_LIST, decided)
        where = replace(where, worker_id=principal.subject)
    if not _may_see_sensitive_values(principal, purpose):
        # Found by the stage they are shown: an agreement withheld from them leaves it unchanged.
        where = replace(where, special=False)
    documents, truncated = await views.find(where, limit)
    case_ids = [str(document["case_id"]) for document in documents]
    # Facts not caught up name the list, never a case found: none is decided yet.
    every_facts = await access.reader_facts_of(
        principal, Action.LIST_CASES, purpose, case_ids, subject=CASE_LIST
    )
    listed: list[tuple[Document, Decision]] = []
    for document, case_id in zip(documents, case_ids, strict=True):
        facts = every_facts[case_id]
        decision = access.decide(principal, Action.LIST_CASES, purpose, facts)
        # A case found by a sensitive need its decision withholds would disclose that need.
        # Nor by a stage it is not shown at (an agreement withheld from them makes it active).
        staged = where.stage is None or stage(document, special=decision.sensitive) == where.stage
        if decision.allowed and (decision.sensitive or not sensitive_filter) and staged:
            listed.append((document, decision))
    return listed, truncated and len(listed) == len(documents)


def _may_see_sensitive_values(principal: Principal, purpose: AccessPurpose) -> bool:
    """Whether some rule letting ``principal``'s role list cases for ``purpose`` may disclose
    sensitive values (decided on the matrix alone, before anything is read: a refusal that
    depended on the cases found would itself tell whether such cases exist)."""
    return any(
        rule.sensitive is not Sensitivity.NONE
        for rule in RULES
        if principal.role in rule.roles
        and Action.LIST_CASES in rule.actions
        and purpose in rule.purposes
    )


def _lists_own_cases_only(principal: Principal) -> bool:
    """Whether every rule letting ``principal``'s role list cases is about the cases it carries
    (case managers, social workers): their lists are theirs, and another worker's refused."""
    relationships = {
        rule.relationship
        for rule in RULES
        if principal.role in rule.roles and Action.LIST_CASES in rule.actions
    }
    return relationships == {Relationship.ASSIGNED_WORKER}
