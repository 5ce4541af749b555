"""The policy at a service's edge: decide, record, redact, and only then answer.

``AccessControl.authorize`` decides for one case and records a refusal
(``casetrail.record.access_denied``, no case content) before raising ``AccessDenied``.
``AccessControl.release`` withholds what the decision does not disclose and records one
``casetrail.record.accessed`` per case in one append, before the caller sends the answer: if
it cannot be recorded, the exception stops the answer. It fails closed: a part of the answer
whose decision discloses none of its sections, or leaves one undisclosed that it has no way to
withhold, is never answered (``answerable``): the refusal is recorded and raised instead.

Accesses to one case go to its ``access-<case id>`` stream with ``ANY_VERSION`` (never a
conflict, so a read is never ABORTED); a list's accesses to many cases go in one append to a
stream of their own (``access-batch-<uuid>``), which nothing races.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol, TypeVar
from uuid import uuid4

from google.protobuf.message import Message
from pydantic import ValidationError

from casetrail_platform.commands import InvalidCommand, NotAllowed, NotCaughtUp
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy import redaction
from casetrail_platform.policy.decide import (
    any_rule_for,
    decide,
    decide_agency_read,
    decide_case_work,
    decide_client_correction,
    decide_supervision,
    may_rest_on_ended,
)
from casetrail_platform.policy.facts import CaseFacts, Entry, Fold, fold, in_order
from casetrail_platform.policy.matrix import CARRYING, REFUSALS
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.policy.vocabulary import (
    REDISCLOSURE_NOTICE_TEXT,
    Action,
    Decision,
    Obligation,
)
from casetrail_platform.store.port import ANY_VERSION, EventStore
from events.catalog.access import (
    AccessPurpose,
    RecordAccessDenied,
    RecordAccessed,
    RecordSection,
)
from events.catalog.base import CaseEvent, Role
from events.envelope import EventMetadata, NewEvent, RecordedEvent
from events.errors import FieldProblem
from events.validation import reported

FOLD_STEP = 250
"""Entries folded per turn of the event loop where a case's whole history is folded on every
read (audit): a case worked for years has thousands, folded in one turn (~10 ms for 3,000 on
the test machine, longer on a busy one) while every other call on the loop waited."""

REDACTED_KEY = "x-casetrail-redacted"
WITHHELD_SECTIONS_KEY = "x-casetrail-withheld-sections"
RULE_KEY = "x-casetrail-access-rule"
NOTICE_KEY = "x-casetrail-redisclosure-notice"

E = TypeVar("E", bound=CaseEvent)

SECTIONS_NOT_COVERED = "sections-not-covered"
"""The refusal of an answer that would show sections its decision does not disclose."""

CASE_WORK_PURPOSE = AccessPurpose.DIRECT_CARE
"""What a refused command on a case's work (``AccessControl.require_case_work``) is recorded
under: a command states no purpose, and this is the work's (the ``assigned-worker`` rule's)."""


class Answer(Protocol):
    """Where the answer's trailing metadata goes (a gRPC servicer context): the app layers name
    this, not gRPC."""

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str]]) -> None: ...


class AccessDenied(NotAllowed):
    """The access policy refused (PERMISSION_DENIED, ErrorInfo reason = the rule)."""

    def __init__(self, principal: Principal, action: Action, decision: Decision) -> None:
        super().__init__(
            principal.role.value,
            action.value,
            f"{action.value}: {decision.reason}",
            rule=decision.rule,
            policy_version=decision.policy_version,
        )
        self.reason = decision.rule.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One case's part of an answer: the decision, the part of the message that shows the case,
    the sensitive paths within it and the record sections it shows."""

    case_id: str
    decision: Decision
    message: Message | None
    sensitive_paths: Sequence[str]
    sections: Sequence[RecordSection]
    shown_fields: Sequence[str] = ()
    """Sensitive fields shown, when the answer is not a message with paths (audit's events)."""
    section_paths: Mapping[RecordSection, Sequence[str]] = field(default_factory=dict)
    """Where each section sits in ``message``: a decision narrower than the whole record
    (a partner agency's referred scope) clears the sections it does not cover."""
    referral_paths: Mapping[str, str] = field(default_factory=dict)
    """Lists in ``message`` whose entries belong to a referral, each with the field naming it
    (``{"referrals": "referral_id"}``): a decision bounded by referrals keeps only theirs."""
    withheld_fields: Sequence[str] = ()
    """Fields withheld, when the answer is not a message with paths (audit's events): listed
    in ``x-casetrail-redacted`` and the access record's ``redacted_fields``."""
    special_links: Mapping[str, Set[str]] = field(default_factory=dict)
    """Fields in ``message`` naming an entry of the case (``{"services.referral_id": ids}``),
    each with the ids of the case's entries of a special-data need or kind (its referrals of
    one: ``redaction.special_ids``, taken before ``keep_readable``): a decision not entitled
    to sensitive values clears the fields naming one and lists their paths as withheld
    (``redaction.unlink``)."""
    special_referrers: Mapping[str, Set[str]] = field(default_factory=dict)
    """As ``special_links``, for lists whose entries are about such an entry rather than
    linked to it (``{"claims.service_ids": ids}``, the case's services of a special-data kind):
    a decision not entitled to sensitive values withholds each entry naming one whole, as the
    entry it names, and lists the paths as withheld (``redaction.drop_referrers``)."""

    def keep_readable(self, special_entries: Iterable[str]) -> None:
        """Cut ``message``'s lists to the entries the reader may see, before an answer bounds
        them (``release`` keeps and withholds the same again): a decision bounded by referrals
        keeps theirs (``referral_paths``), and one not entitled to sensitive values loses the
        entries of a special-data need or kind (``special_entries``). So a list's total and
        its ``truncated`` count only what the caller may read, and the sensitive fields
        recorded as read are those of the entries listed."""
        if self.message is None:
            return
        if self.decision.referral_ids is not None:
            redaction.keep_referred(self.message, self.referral_paths, self.decision.referral_ids)
        if not self.decision.sensitive:
            redaction.redact(self.message, special_entries)
            redaction.drop_referrers(self.message, self.special_referrers)


@dataclass
class AccessControl:
    store: EventStore
    """The service's own store: its accesses are its own events."""
    facts: CaseFactsReader | None
    """``None`` for a service that folds the facts from histories it holds (audit)."""
    source: str
    home_agency: str
    """The agency whose staff the service serves (``CASETRAIL_HOME_AGENCY``, read where the
    process is composed: ``policy.home_agency``). No default: a deployment for another agency
    would silently serve the example agency's staff instead of its own."""
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    own_streams: str | None = None
    """A stream name prefix: each append goes to a new stream ``<prefix><uuid>``, one case's
    accesses too (``casetrail tail``, which records in a service's store beside the service:
    its records are told apart by their streams and never interleave a case's access
    stream)."""
    facts_caught_up: Callable[[str], Awaitable[bool]] | None = None
    """Whether the facts' consumer group has applied every event of the case's partition that
    was on the bus when asked, waiting a bounded time (``ServiceHost.caught_up``): the barrier
    ``require_supervision`` raises. ``None``: facts not fed from a bus (tests, audit)."""
    case_facts_caught_up: Callable[[str], Awaitable[bool]] | None = None
    """As ``facts_caught_up``, up to the case's last event of a type the facts are made of
    only (not the whole partition): the barrier a read waits at (``reader_facts``)."""

    async def case_facts(self, case_id: str, own_entries: Iterable[Entry] = ()) -> CaseFacts:
        if self.facts is None:
            return await _folded(case_id, own_entries)
        return await self.facts.facts(case_id, own_entries=own_entries)

    async def cases_facts(self, case_ids: Sequence[str]) -> dict[str, CaseFacts]:
        """``case_facts`` of each case (none of the service's own entries), by case id, in one
        read for those not kept in memory: a list answer decides on each case it lists."""
        if self.facts is None:
            return {case_id: fold(case_id, ()) for case_id in case_ids}
        return await self.facts.facts_of(case_ids)

    async def cases_of_client(self, client_id: str) -> list[str]:
        return [] if self.facts is None else await self.facts.cases_of_client(client_id)

    async def reader_facts(
        self,
        principal: Principal,
        action: Action,
        purpose: AccessPurpose,
        case_id: str,
        own_entries: Iterable[Entry] = (),
        *,
        subject: str,
    ) -> CaseFacts:
        """``case_facts`` to decide a read on. A caller whose right may rest on a relationship
        an event ends (``may_rest_on_ended``: an assigned worker, a team's supervisor, a
        partner agency under a referral and consent) first waits for the facts' group to have
        applied every event of the case's facts that was on the bus when the read began, and
        the facts are then read afresh (``require_supervision``'s reasons): a worker the case
        was transferred from is refused from the first read after the transfer was answered
        (coordination answers it once it is on the bus), a partner whose consent was revoked
        from the first read after the revocation was answered (intake answers it once it is
        on the bus), not once the bus has delivered them here. Not in time: ``NotCaughtUp``
        (UNAVAILABLE, retry) naming ``subject``, what the request asked about (the case it
        sent, or the client or search the case was looked up for: ``_waited``), nothing
        decided or disclosed.
        Other callers decide on the facts as they stand (README, "A transfer not delivered
        yet")."""
        waited = await self.wait_for_facts(principal, action, purpose, [case_id], subject=subject)
        if waited and self.facts is not None:
            return await self.facts.facts(case_id, own_entries=own_entries, fresh=True)
        return await self.case_facts(case_id, own_entries)

    async def facts_as_on_the_bus(self, case_id: str) -> CaseFacts:
        """The case's facts once the facts' group holds every event of the case's facts that
        was on the bus when asked, read afresh, whoever asks: for a disclosure to another
        agency (a referral), decided on the client's consent, so that neither a consent
        granted nor one revoked a moment ago at intake (answered once on the bus) is missed.
        Not in time: ``NotCaughtUp``; facts not fed from a bus: as they stand."""
        # Only MakeReferral asks, about the case its command names.
        return (await self._facts_of([case_id], wait=True, subject=case_id))[case_id]

    async def wait_for_facts(
        self,
        principal: Principal,
        action: Action,
        purpose: AccessPurpose,
        case_ids: Sequence[str],
        *,
        subject: str,
    ) -> bool:
        """``reader_facts``' barrier alone, side by side for each of ``case_ids``, for a reader
        that folds the facts itself (audit, from its copy of the cases' events:
        ``case_facts_caught_up`` then asks about that copy's group): whether it waited;
        ``NotCaughtUp`` under ``subject`` if not in time."""
        if not may_rest_on_ended(principal.role, action, purpose):
            return False
        return await self._waited(list(dict.fromkeys(case_ids)), subject)

    async def reader_facts_of(
        self,
        principal: Principal,
        action: Action,
        purpose: AccessPurpose,
        case_ids: Sequence[str],
        *,
        subject: str,
    ) -> dict[str, CaseFacts]:
        """``reader_facts`` of each case, by case id (a list answer's cases, looked up for the
        request about ``subject``): the waits side by side, then the facts in one read
        (``cases_facts``)."""
        waits = may_rest_on_ended(principal.role, action, purpose)
        return await self._facts_of(case_ids, wait=waits, subject=subject)

    async def _facts_of(
        self, case_ids: Sequence[str], *, wait: bool, subject: str
    ) -> dict[str, CaseFacts]:
        """``cases_facts``; ``wait``: once the facts' group holds each case's facts on the bus
        (``_waited``, under ``subject``), read afresh."""
        wanted = list(dict.fromkeys(case_ids))
        if wait and await self._waited(wanted, subject) and self.facts is not None:
            return await self.facts.facts_of(wanted, fresh=True)
        return await self.cases_facts(case_ids)

    async def _waited(self, case_ids: Sequence[str], subject: str) -> bool:
        """Wait, side by side, for the facts' group to hold each case's facts on the bus
        (``case_facts_caught_up``): whether there was a barrier to wait at; ``NotCaughtUp`` if
        one is not in time, naming ``subject``, what the request asked about, and never the
        case: the cases were often looked up for it (a client's, a list's) and nothing is
        decided yet, so naming one would tell the caller of a case they may not read. The
        same refusal whichever case trails, and worded by the request alone."""
        waits = self.case_facts_caught_up
        if waits is None:
            return False
        answers = await asyncio.gather(*map(waits, case_ids))
        if not all(answers):
            asked_about_the_case = list(case_ids) == [subject]
            what = (
                "the case's relationships" if asked_about_the_case else "the cases' relationships"
            )
            raise NotCaughtUp(what, subject)
        return True

    def decide(
        self, principal: Principal, action: Action, purpose: AccessPurpose, facts: CaseFacts | None
    ) -> Decision:
        return decide(
            principal, action, purpose, facts, home_agency=self.home_agency, now=self.clock()
        )

    async def require_supervision(
        self, principal: Principal, case_id: str, *, assignment_seen: int = 0
    ) -> None:
        """Refuse a supervisor's command on a case of another team (PERMISSION_DENIED
        ``NO_RELATIONSHIP``, not recorded: like every command's refusal, nothing was read);
        other roles are left to the service's own rules. The case's team as the policy's facts
        have it, from the bus: a service that records the case's assignments itself decides
        on its own history instead (``supervises``).

        First the barrier (``facts_caught_up``): coordination answers an assignment or a
        transfer once it is on the bus, so once the facts' group has applied the case's
        partition as far as it reached when this began, every transfer acknowledged before is
        in the facts. Not in time: ``NotCaughtUp`` (UNAVAILABLE, retry), whoever asks, before
        anything is decided. The facts are then read afresh, not from the cache of recently
        read cases (whose forgetting may trail the commit another replica made).

        ``assignment_seen``: the sequence in coordination's case stream of the newest
        assignment the service learnt of another way (planning's case view, another consumer
        group): facts that hold an older one may name the team the case just left, so a
        supervisor they allow is answered ``NotCaughtUp`` (UNAVAILABLE, retry) instead. Only
        after they allow: a supervisor of another team learns nothing of the case."""
        if principal.role is not Role.SUPERVISOR:
            return
        if self.facts_caught_up is not None and not await self.facts_caught_up(case_id):
            raise NotCaughtUp("the case's assignment", case_id)
        facts = (
            await self.case_facts(case_id)
            if self.facts is None
            else await self.facts.facts(case_id, fresh=True)
        )
        self.supervises(principal, facts)
        held = facts.assignment_sequence
        # Facts kept before their entries held a sequence cannot tell: decided as they stand.
        if held is not None and held < assignment_seen:
            raise NotCaughtUp("the case's assignment", case_id)

    def supervises(self, principal: Principal, facts: CaseFacts) -> None:
        """``require_supervision`` on the case as ``facts`` have it: coordination gives the
        team its own case stream records (``CaseAssigned``/``CaseReassigned``), read in the
        decision its append follows, so a transfer the bus has not delivered yet counts."""
        if principal.role is not Role.SUPERVISOR:
            return
        decision = decide_supervision(
            principal, facts, home_agency=self.home_agency, now=self.clock()
        )
        if not decision.allowed:
            raise AccessDenied(principal, Action.RECORD, decision)

    async def require_client_correction(self, principal: Principal, client_id: str) -> list[str]:
        """The client's cases, once ``principal`` may correct the client's record
        (``decide_client_correction``); else PERMISSION_DENIED ``NO_RELATIONSHIP``, not
        recorded, as ``require_supervision``'s. A worker's or a supervisor's right rests on
        an assignment a transfer ends: decided on the cases' facts once they hold what the
        bus has of them (``reader_facts``' barrier; not in time, ``NotCaughtUp`` naming the
        client, never one of its cases); a coordinator's does not."""
        case_ids = await self.cases_of_client(client_id)
        facts = await self._facts_of(
            case_ids, wait=principal.role is not Role.COORDINATOR, subject=client_id
        )
        cases = [facts[case_id] for case_id in case_ids]
        decision = decide_client_correction(
            principal, cases, home_agency=self.home_agency, now=self.clock()
        )
        if not decision.allowed:
            raise AccessDenied(principal, Action.RECORD, decision)
        return case_ids

    async def require_case_work(self, principal: Principal, action: Action, case_id: str) -> None:
        """Refuse, and record under ``CASE_WORK_PURPOSE``, a case manager's or social worker's
        command on the work of a case not assigned to them (``decide_case_work``:
        PERMISSION_DENIED ``NO_RELATIONSHIP``). Decided on the case's facts alone, before
        anything tells whether the case exists or what state it is in: an unknown case id (its
        facts name no worker) is refused and recorded alike. Their right rests on an
        assignment a transfer ends, so the facts are read afresh once they hold what the bus
        has of the case (``reader_facts``' barrier; not in time, ``NotCaughtUp`` naming the
        case): coordination answers an assignment once it is on the bus, so the worker it was
        just given to is let in, and the one it was just taken from is not. Other roles are
        left to the service's own rules."""
        if principal.role not in CARRYING:
            return
        facts = (await self._facts_of([case_id], wait=True, subject=case_id))[case_id]
        decision = decide_case_work(
            principal, facts, home_agency=self.home_agency, now=self.clock()
        )
        if not decision.allowed:
            await self.refuse(principal, action, CASE_WORK_PURPOSE, case_id, decision)

    async def require_agency_reader(
        self, principal: Principal, action: Action, purpose: AccessPurpose, subject: str
    ) -> None:
        """Refuse, and record under ``subject``, a caller of another agency asking for what is
        the agency's own rather than one case's (``decide_agency_read``: PERMISSION_DENIED
        ``NO_RELATIONSHIP``), before anything is read: the role alone let them in."""
        decision = decide_agency_read(principal, home_agency=self.home_agency)
        if not decision.allowed:
            await self.refuse(principal, action, purpose, subject, decision)

    async def require_role(
        self, principal: Principal, action: Action, purpose: AccessPurpose, case_id: str
    ) -> None:
        """Refuse (and record) a role no rule lets do ``action`` for ``purpose``, before anything
        is looked up: such a caller learns nothing, not even whether the case exists."""
        if any_rule_for(principal.role, action, purpose):
            return
        decision = decide(
            principal, action, purpose, None, home_agency=self.home_agency, now=self.clock()
        )
        await self.refuse(principal, action, purpose, case_id, decision)

    async def authorize(
        self,
        principal: Principal,
        action: Action,
        purpose: AccessPurpose,
        facts: CaseFacts,
    ) -> Decision:
        decision = self.decide(principal, action, purpose, facts)
        if not decision.allowed:
            await self.refuse(principal, action, purpose, facts.case_id, decision)
        return decision

    async def refuse(
        self,
        principal: Principal,
        action: Action,
        purpose: AccessPurpose,
        case_id: str,
        decision: Decision,
    ) -> NoReturn:
        """Record the refusal, then raise it."""
        await self._append(principal, [_denied(principal, action, purpose, case_id, decision)])
        raise AccessDenied(principal, action, decision)

    async def refuse_cases(
        self,
        principal: Principal,
        action: Action,
        purpose: AccessPurpose,
        case_ids: Sequence[str],
        decision: Decision,
    ) -> NoReturn:
        """Record the refusal for each of ``case_ids`` in one append (a query about many cases,
        such as a client's accounting of disclosures), then raise it."""
        denied = [_denied(principal, action, purpose, case_id, decision) for case_id in case_ids]
        if denied:
            await self._append(principal, denied)
        raise AccessDenied(principal, action, decision)

    async def release(
        self,
        context: Answer | None,
        principal: Principal,
        purpose: AccessPurpose,
        disclosures: Sequence[Disclosure],
        *,
        action: Action = Action.READ_CASE,
    ) -> list[RecordedEvent]:
        """Withhold, record, and tell the caller what was withheld (trailing metadata); the
        accesses recorded.

        Nothing is withheld or recorded unless every item may be answered (``answerable``):
        otherwise the refusals of the items that may not (``action``, under their cases) are
        recorded in one append and the first raised, and none of the answer may be sent."""
        refused = [
            (item.case_id, refusal)
            for item in disclosures
            if not (refusal := answerable(item)).allowed
        ]
        if refused:
            denied = [_denied(principal, action, purpose, c, d) for c, d in refused]
            await self._append(principal, denied)
            raise AccessDenied(principal, action, refused[0][1])
        accessed: list[CaseEvent] = []
        withheld: set[str] = set()
        withheld_sections: set[str] = set()
        obligations: set[Obligation] = set()
        rules: set[str] = set()
        for item in disclosures:
            decision = item.decision
            shown, hidden = list(item.shown_fields), list(item.withheld_fields)
            kept = {s for s in item.sections if decision.discloses(s)}
            if item.message is not None and decision.referral_ids is not None:
                redaction.keep_referred(item.message, item.referral_paths, decision.referral_ids)
            if item.message is not None:
                for section, paths in item.section_paths.items():
                    if not decision.discloses(section):
                        redaction.withhold(item.message, paths)
                        withheld_sections.add(section.value)
            if item.message is not None and decision.sensitive:
                shown = redaction.present(item.message, item.sensitive_paths)
            elif item.message is not None:
                hidden += redaction.redact(item.message, item.sensitive_paths)
                hidden += redaction.unlink(item.message, item.special_links)
                hidden += redaction.drop_referrers(item.message, item.special_referrers)
            withheld.update(hidden)
            obligations.update(decision.obligations)
            rules.add(decision.rule)
            sections = tuple(s for s in RecordSection if s in kept)
            if not sections:
                continue  # an item that shows no section of a case (a ledger query's)
            accessed.append(
                _checked(
                    RecordAccessed,
                    case_id=item.case_id,
                    accessor_id=principal.subject,
                    accessor_role=principal.role,
                    accessor_agency_id=principal.agency,
                    purpose=purpose,
                    sections=sections,
                    fields=tuple(shown),
                    consent_ids=decision.consent_ids,
                    rule=decision.rule,
                    policy_version=decision.policy_version,
                    redacted_fields=tuple(hidden),
                    emergency_access_id=decision.emergency_access_id,
                    client_application=principal.client,
                )
            )
        recorded = await self._append(principal, accessed) if accessed else []
        if context is not None:
            trailing = [(RULE_KEY, ",".join(sorted(rules)))]
            if withheld:
                trailing.append((REDACTED_KEY, ",".join(sorted(withheld))))
            if withheld_sections:
                trailing.append((WITHHELD_SECTIONS_KEY, ",".join(sorted(withheld_sections))))
            if Obligation.REDISCLOSURE_NOTICE in obligations:
                trailing.append((NOTICE_KEY, REDISCLOSURE_NOTICE_TEXT))
            context.set_trailing_metadata(tuple(trailing))
        return recorded

    async def _append(
        self, principal: Principal, events: Sequence[CaseEvent]
    ) -> list[RecordedEvent]:
        metadata = EventMetadata(
            source=self.source,
            actor=principal.actor,
            occurred_at=self.clock(),
            correlation_id=uuid4(),
        )
        new = [NewEvent(event=e, metadata=metadata) for e in events]
        if self.own_streams is not None:
            return await self.store.append(f"{self.own_streams}{uuid4().hex}", new, 0)
        cases = {event.subject for event in events}
        if len(cases) > 1:
            # A list's accesses: one append to a stream of their own, which nothing races.
            return await self.store.append(f"access-batch-{uuid4().hex}", new, 0)
        # Each access is its own fact that no decision reads back: the store places it after
        # whatever the stream holds, so concurrent readers of one case never conflict.
        return await self.store.append(access_stream(cases.pop()), new, ANY_VERSION)


def answerable(item: Disclosure) -> Decision:
    """The decision ``item`` may be answered under, or the refusal that stops it: its own
    decision's when that refused, else ``sections-not-covered`` when it discloses none of the
    item's sections, or leaves one undisclosed that has no paths in the message to withhold
    (an item without a message withholds nothing: its data sit elsewhere in the answer). An
    item naming no section shows no case content (a ledger query) and is answered as decided."""
    decision = item.decision
    if not decision.allowed or not item.sections:
        return decision
    undisclosed = [s for s in item.sections if not decision.discloses(s)]
    withholdable = item.section_paths if item.message is not None else {}
    if len(undisclosed) == len(item.sections):
        uncovered = undisclosed
    else:
        uncovered = [s for s in undisclosed if s not in withholdable]
    if not uncovered:
        return decision
    named = ", ".join(dict.fromkeys(s.value for s in uncovered))
    return Decision(
        False,
        SECTIONS_NOT_COVERED,
        decision.policy_version,
        reason=f"{REFUSALS[SECTIONS_NOT_COVERED]} ({named})",
    )


def access_stream(case_id: str) -> str:
    """Where a service records the accesses to one case (a list's go to a batch stream)."""
    return f"access-{case_id}"


_REQUEST_FIELDS = {
    "case_id": "case_id",
    # Who read comes from the verified token (claims sub and role), never from the request.
    "accessor_id": "authorization",
    "accessor_role": "authorization",
    "accessor_agency_id": "principal.agency",
    "purpose": "context.purpose",
}


async def _folded(case_id: str, entries: Iterable[Entry]) -> CaseFacts:
    """``fold``'s facts, letting other calls run every ``FOLD_STEP`` entries."""
    folding = Fold(case_id)
    for index, entry in enumerate(in_order(entries)):
        if index and index % FOLD_STEP == 0:
            await asyncio.sleep(0)
        folding.take(entry)
    return folding.facts()


def _denied(
    principal: Principal,
    action: Action,
    purpose: AccessPurpose,
    case_id: str,
    decision: Decision,
) -> RecordAccessDenied:
    return _checked(
        RecordAccessDenied,
        case_id=case_id,
        accessor_id=principal.subject,
        accessor_role=principal.role,
        accessor_agency_id=principal.agency,
        purpose=purpose,
        action=action.value,
        rule=decision.rule,
        policy_version=decision.policy_version,
        client_application=principal.client,
    )


def _checked(model: type[E], **fields: Any) -> E:
    """The access event, or ``InvalidCommand`` naming the request field the catalog refuses
    (an id the store could not keep is the caller's error, and nothing is disclosed)."""
    try:
        return model(**fields)
    except ValidationError as error:
        raise InvalidCommand(
            [
                FieldProblem(
                    _REQUEST_FIELDS.get(str(detail["loc"][0]) if detail["loc"] else "", "request"),
                    detail["msg"],
                )
                for detail in reported(error, model)
            ]
        ) from None
