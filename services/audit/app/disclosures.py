"""The accounting of disclosures of a client's record (``AuditService.ListDisclosures``).

It covers the client's cases and the client's own id, under which a read of their record
made while they had no case is recorded (intake's ``client_decision``): a client audit knows
(their registration received) is accounted for with or without a case.

Who may ask is the access policy's decision, per case of the client and on the client alone
for their own id (auditors for a confidentiality review, the client themself): a role no rule
lets ask is refused before anything is looked up, a refusal on any of them refuses the whole
accounting, and every refusal is recorded. The accounting shows each case's access log, so one
``record.accessed`` per case (section ``access_log``) is recorded, in one append, before the
answer, and one under the client's id when that holds disclosures in the period or the client
has no case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from casetrail_platform.commands import NotFound
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import any_rule_for
from casetrail_platform.policy.facts import no_case_of
from casetrail_platform.policy.guard import Answer
from casetrail_platform.policy.guard import Disclosure as Released
from casetrail_platform.policy.vocabulary import Action, Decision
from casetrail_platform.queries import QueryContext
from events.catalog.access import AccessPurpose, ConsentGranted, RecordSection
from events.envelope import RecordedEvent, to_micros
from services.audit.app.queries import AuditDeps, ClientCases, received_facts
from services.audit.domain.disclosures import Disclosure, DisclosureKey, disclosure_of
from services.audit.domain.errors import ClientNotFound, invalid

ACTION = Action.ACCOUNT_DISCLOSURES
MAX_PERIOD_YEARS = 6
"""45 CFR 164.528(a): an accounting covers at most the six years before the request."""
ACCOUNTING_SUBJECT = "disclosure-accounting"
"""Where a refused accounting is recorded when the client has no case to record it under."""


class DisclosureIndex(Protocol):
    """The disclosures recorded under each case, or client id, by disclosed-at
    (``adapters.disclosure_index``); periods are inclusive bounds in microseconds since the
    Unix epoch."""

    async def count(self, case_id: str, start: int, end: int) -> int: ...

    async def page(
        self,
        case_ids: list[str],
        start: int,
        end: int,
        after: DisclosureKey | None,
        size: int,
    ) -> tuple[list[RecordedEvent], bool]:
        """Up to ``size`` disclosure events recorded under ``case_ids`` (a client's id among
        them) after ``after``, in the accounting's order, and whether more follow."""
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
    client_cases: ClientCases | None,
    index: DisclosureIndex | None,
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
    case_ids = [] if client_cases is None else await client_cases.cases_of(client_id)
    if not any_rule_for(who.role, ACTION):
        # Refused before the client is looked at: the same answer whether it exists or not,
        # and whether this server keeps the accounting or not.
        decision = access.decide(who, ACTION, viewer.purpose, None)
        refused_for = case_ids or [ACCOUNTING_SUBJECT]
        await access.refuse_cases(who, ACTION, viewer.purpose, refused_for, decision)
    if client_cases is None or index is None:
        raise NotFound("disclosure index", "this audit server has none")
    # A case whose events have not reached its timeline yet has nothing to account for yet.
    facts_of = await received_facts(deps, who, ACTION, viewer.purpose, case_ids, subject=client_id)
    # A read of the client's record while they had no case is recorded under their own id
    # (intake's ``client_decision``), so the index keeps it there: it is theirs to be told of
    # before and after a case is opened. Decided as intake decides such a read, on the client
    # alone.
    own = access.decide(who, ACTION, viewer.purpose, no_case_of(client_id))
    if not facts_of:
        # Decided before it is said, as every read: a caller refused (another agency's
        # auditor, another client) is refused on record for an id that is no client here as
        # for one that is; only one allowed is told whether audit knows the client, as
        # intake's GetClient tells them.
        if not own.allowed:
            refused_for = case_ids or [ACCOUNTING_SUBJECT]
            await access.refuse_cases(who, ACTION, viewer.purpose, refused_for, own)
        if not await deps.timelines.knows_client(client_id):
            raise ClientNotFound(client_id)
    case_ids = list(facts_of)
    decisions: dict[str, Decision] = {}
    for case_id, entries in facts_of.items():
        facts = await access.case_facts(case_id, entries)
        decisions[case_id] = access.decide(who, ACTION, viewer.purpose, facts)
    decisions[client_id] = own
    # Recorded where it refuses: the cases, or the client's own reads when every case allows.
    refused = [case_id for case_id in case_ids if not decisions[case_id].allowed]
    if not refused and not own.allowed:
        refused = [client_id]
    if refused:
        await access.refuse_cases(who, ACTION, viewer.purpose, refused, decisions[refused[0]])
    start, end = to_micros(asked.start), to_micros(asked.end)
    counts = {subject: await index.count(subject, start, end) for subject in decisions}
    events, more = await index.page(list(decisions), start, end, cursor, page_size)
    purposes = {
        entry["consent_id"]: AccessPurpose(entry["purpose"])
        for entries in facts_of.values()
        for entry in entries
        if entry["type"] == ConsentGranted.event_type
    }
    page = [
        disclosure
        for recorded in events
        if (disclosure := disclosure_of(recorded, access.home_agency, purposes)) is not None
    ]
    # Each case's access log is shown; the client's own only where it is all there is, or
    # holds disclosures in the period.
    shown = [*case_ids, *([client_id] if counts[client_id] or not case_ids else [])]
    await access.release(
        answer,
        who,
        viewer.purpose,
        [
            Released(subject, decisions[subject], None, (), (RecordSection.ACCESS_LOG,))
            for subject in shown
        ],
    )
    next_cursor = page[-1].key if more and page else None
    return DisclosurePage(page, next_cursor, sum(counts.values()), case_ids)
