"""Reads of the caseload views (``services/caseload``), recorded in audit's store before the
view answers.

The caseload processor keeps no event store of its own, so it asks audit to decide and record
each read, calling with the reader's own bearer token: the accessor is the verified caller,
never something the processor states. The decision is the agency-wide ``READ_CASELOADS``
(about no single case, as the views list many); an allowed read is recorded as one
``record.accessed`` per case the view names, a refused one as one ``record.access_denied``
per case named (under ``CASELOADS_SUBJECT`` when it names none). A read the processor refuses
of its own (``PROCESSOR_REFUSALS``: a part of an all-worker view no process asked for) is
recorded refused by that rule whatever the policy would decide: the policy allows the views to
auditors, the role they are for, and their read naming no case records nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import refusal
from casetrail_platform.policy.guard import Disclosure
from casetrail_platform.policy.vocabulary import Action, Decision
from casetrail_platform.queries import QueryContext
from events.catalog.access import RecordSection
from services.audit.app.queries import AuditDeps

CASELOADS_SUBJECT = "caseloads"
"""Where a refused read that names no case is recorded (the view is about whole caseloads)."""
PROCESSOR_REFUSALS = {"PART_NOT_ASKED": "part-not-asked"}
"""The refusals the caseload processor states of its own (``refused_by``): its reason, and the
rule of ``matrix.REFUSALS`` audit records it by (whose ``AccessDenied`` reason it is again)."""


class CaseloadView(StrEnum):
    CASELOADS = "caseloads"
    OVERDUE = "overdue"
    CONTACTS_PER_DAY = "contacts_per_day"

    @property
    def sections(self) -> tuple[RecordSection, ...]:
        """What the view shows of each case it names."""
        return _SECTIONS[self]


_SECTIONS = {
    # Which worker holds the open case (or that nobody does).
    CaseloadView.CASELOADS: (RecordSection.ASSIGNMENT,),
    # The holder, and the follow-up due date the newest contact set.
    CaseloadView.OVERDUE: (RecordSection.ASSIGNMENT, RecordSection.CONTACTS),
    # Counts per worker and day: no case.
    CaseloadView.CONTACTS_PER_DAY: (),
}


@dataclass(frozen=True)
class CaseloadAccess:
    rule: str
    policy_version: str
    recorded: int


def processor_refusal(reason: str) -> Decision | None:
    """The refusal the processor states as ``reason`` (e.g. ``PART_NOT_ASKED``); ``None`` when
    it is none of ``PROCESSOR_REFUSALS``."""
    rule = PROCESSOR_REFUSALS.get(reason)
    return None if rule is None else refusal(rule)


async def record_caseload_access(
    deps: AuditDeps,
    viewer: QueryContext,
    principal: Principal,
    view: CaseloadView,
    case_ids: Sequence[str],
    refused_by: Decision | None = None,
) -> CaseloadAccess:
    """Decide ``READ_CASELOADS`` for ``principal``; record the read of ``case_ids`` (one access
    per case, one append) or the refusal, which is then raised (``AccessDenied``). A read the
    processor ``refused_by`` (``processor_refusal``, naming no case) is recorded refused by its
    rule under ``CASELOADS_SUBJECT``, whatever the caller's role, and raised."""
    cases = list(dict.fromkeys(case_ids))
    action, purpose = Action.READ_CASELOADS, viewer.purpose
    if refused_by is not None:
        await deps.access.refuse(principal, action, purpose, CASELOADS_SUBJECT, refused_by)
    decision = deps.access.decide(principal, action, purpose, None)
    if not decision.allowed:
        if cases:
            await deps.access.refuse_cases(principal, action, purpose, cases, decision)
        await deps.access.refuse(principal, action, purpose, CASELOADS_SUBJECT, decision)
    shown = [Disclosure(case_id, decision, None, (), view.sections) for case_id in cases]
    recorded = await deps.access.release(None, principal, purpose, shown) if shown else []
    return CaseloadAccess(decision.rule, decision.policy_version, len(recorded))
