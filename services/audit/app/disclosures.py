"""The accounting of disclosures of a client's record (``AuditService.ListDisclosures``).

Who may ask is the access policy's decision, per case of the client (auditors for a
confidentiality review, the client themself): a role no rule lets ask is refused before
anything is looked up, a refusal on any case refuses the whole accounting, and every refusal
is recorded. The accounting shows each case's access log, so one ``record.accessed`` per case
(section ``access_log``) is recorded, in one append, before the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import any_rule_for
from casetrail_platform.policy.facts import entry_of
from casetrail_platform.policy.guard import Answer
from casetrail_platform.policy.guard import Disclosure as Released
from casetrail_platform.policy.vocabulary import Action, Decision
from casetrail_platform.queries import QueryContext
from events.catalog.access import RecordSection
from services.audit.app.queries import AuditDeps
from services.audit.domain.disclosures import Disclosure, DisclosureKey, disclosures_of
from services.audit.domain.errors import ClientNotFound, invalid

ACTION = Action.ACCOUNT_DISCLOSURES
MAX_PERIOD_YEARS = 6
"""45 CFR 164.528(a): an accounting covers at most the six years before the request."""
ACCOUNTING_SUBJECT = "disclosure-accounting"
"""Where a refused accounting is recorded when the client has no case to record it under."""


class ClientCases(Protocol):
    async def cases_of(self, client_id: str) -> list[str]:
        """The ids of the client's cases audit knows of (empty for an unknown client)."""
        ...


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


@dataclass(frozen=True)
class DisclosurePage:
    disclosures: list[Disclosure]
    next_cursor: DisclosureKey | None
    total: int
    case_ids: list[str]


def period(start: datetime, end: datetime) -> Period:
    """The period asked, or ``InvalidCommand`` naming the bound that is wrong."""
    if end < start:
        raise invalid("period_end", "must not be before period_start")
    if start < six_years_before(end):
        raise invalid(
            "period_start",
            f"the period may span at most {MAX_PERIOD_YEARS} years (45 CFR 164.528)",
        )
    return Period(start, end)


def six_years_before(moment: datetime) -> datetime:
    year = moment.year - MAX_PERIOD_YEARS
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February: six years earlier has none
        return moment.replace(year=year, day=28) + timedelta(days=1)


async def list_disclosures(
    deps: AuditDeps,
    client_cases: ClientCases,
    viewer: QueryContext,
    client_id: str,
    asked: Period,
    *,
    page_size: int = 100,
    cursor: DisclosureKey | None = None,
    principal: Principal | None = None,
    answer: Answer | None = None,
) -> DisclosurePage:
    access = deps.access
    who = principal or Principal(
        viewer.actor.user_id, viewer.actor.role, access.home_agency, "in-process"
    )
    case_ids = await client_cases.cases_of(client_id)
    if not any_rule_for(who.role, ACTION):
        # Refused before the client is looked at: the same answer whether it exists or not.
        decision = access.decide(who, ACTION, viewer.purpose, None)
        refused_for = case_ids or [ACCOUNTING_SUBJECT]
        await access.refuse_cases(who, ACTION, viewer.purpose, refused_for, decision)
    # The index and the timelines are fed by separate consumers: a case whose events have not
    # reached its timeline yet has nothing to account for yet.
    histories = {
        case_id: events
        for case_id in case_ids
        if (events := await deps.timelines.events_of(case_id))
    }
    if not histories:
        raise ClientNotFound(client_id)
    case_ids = list(histories)
    decisions: dict[str, Decision] = {}
    for case_id, events in histories.items():
        entries = [entry for entry in map(entry_of, events) if entry is not None]
        facts = await access.case_facts(case_id, entries)
        decisions[case_id] = access.decide(who, ACTION, viewer.purpose, facts)
    refused = [case_id for case_id, decision in decisions.items() if not decision.allowed]
    if refused:
        await access.refuse_cases(who, ACTION, viewer.purpose, refused, decisions[refused[0]])
    found = sorted(
        (
            disclosure
            for case_id, events in histories.items()
            for disclosure in disclosures_of(events, access.home_agency)
            if asked.holds(disclosure.disclosed_at)
        ),
        key=lambda disclosure: disclosure.key,
    )
    start = (
        0
        if cursor is None
        else next((i for i, disclosure in enumerate(found) if disclosure.key > cursor), len(found))
    )
    page = found[start : start + page_size]
    more = start + page_size < len(found)
    await access.release(
        answer,
        who,
        viewer.purpose,
        [
            Released(case_id, decisions[case_id], None, (), (RecordSection.ACCESS_LOG,))
            for case_id in case_ids
        ],
    )
    return DisclosurePage(page, page[-1].key if more and page else None, len(found), case_ids)
