"""Intake's reads. Each names who asks and why (need-to-know) and checks the reader's role.

``probe_from`` and the platform's ``required_id`` check a query's fields without I/O; the gRPC
entrypoint runs them too, to refuse a request's bad fields together with its context's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date

from casetrail_platform.commands import InvalidCommand, NotFound, required_id
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.facts import CaseFacts, Entry, entry_of
from casetrail_platform.policy.guard import AccessControl, AccessDenied, Disclosure, answerable
from casetrail_platform.policy.matrix import RULES
from casetrail_platform.policy.vocabulary import Action, Decision, Relationship
from casetrail_platform.queries import QueryContext
from casetrail_platform.store.port import EventStore
from events.catalog.access import AccessPurpose, RecordSection
from events.catalog.base import Role
from events.catalog.clients import PersonalIdentifier, PersonName
from events.catalog.values import CatalogValue
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from services.intake.adapters.case_closures import Closure, ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app.commands import FindDuplicates
from services.intake.app.validation import build, fields_of
from services.intake.domain.cases import CaseRecord, case_from, case_stream
from services.intake.domain.clients import ClientRecord, client_from, client_stream
from services.intake.domain.matching import DuplicateCandidate, Probe, check_matchable

CASE_SECTIONS = (RecordSection.IDENTITY, RecordSection.ASSESSMENT, RecordSection.DISCHARGE)
CLIENT_SECTIONS = (RecordSection.IDENTITY,)
REFUSED_CANDIDATE_FIELDS = ("client_id", "same_name_and_date_of_birth", "shared_identifier_schemes")
"""What RegisterClient's refusal shows of each candidate (no personal value: a trailer), recorded
as the fields read of its identity."""
Fits = Callable[[Sequence[DuplicateCandidate]], bool]
"""Whether an answer naming these candidates stays within its bound (the entrypoint measures
it: each candidate's name and shared identifiers, up to 500 characters of up to 4 bytes each,
so a count alone does not bound an answer)."""
CLIENT_SEARCH = "client-search"
"""Where a duplicate search refused outright is recorded: it names no client or case (audit's
access log of this id lists such refusals)."""


@dataclass(frozen=True, slots=True)
class CaseView:
    case: CaseRecord
    client: ClientRecord | None
    closures: tuple[Closure, ...]
    facts: CaseFacts
    """What the access policy decides on: the bus's facts and intake's own (consents)."""

    @property
    def status(self) -> str:
        return "closed" if self.case.is_closed(len(self.closures)) else "open"


class _ProbeInput(CatalogValue):
    name: PersonName | None = None
    date_of_birth: date | None = None
    identifiers: tuple[PersonalIdentifier, ...] = ()


async def get_client(store: EventStore, client_id: str) -> ClientRecord:
    """The client's record; who may see it is decided first by ``client_decisions``."""
    required_id("client_id", client_id)
    client = client_from(await store.read_stream(client_stream(client_id)))
    if client is None:
        raise NotFound("client", client_id)
    return client


def probe_from(query: FindDuplicates) -> Probe:
    details = build(_ProbeInput, fields_of(query))
    probe = Probe(details.name, details.date_of_birth, details.identifiers)
    check_matchable(probe)
    if probe.name_key is None and not probe.identifiers:
        raise InvalidCommand(
            [
                FieldProblem(
                    "identifiers",
                    "give a name with a date of birth, or at least one identifier: a name"
                    " alone never identifies a person",
                )
            ]
        )
    return probe


async def find_possible_duplicates(
    store: EventStore,
    directory: ClientDirectory,
    access: AccessControl,
    principal: Principal,
    reader: QueryContext,
    query: FindDuplicates,
    fits: Fits = lambda _: True,
) -> tuple[list[DuplicateCandidate], list[Disclosure], bool]:
    """The candidates the policy lets ``principal`` see, as many as the answer holds
    (``fits``, ``disclosed_candidates``), their disclosures for ``AccessControl.release`` (the
    caller records them before answering), and whether a match key named more clients than a
    lookup answers (``FoundCandidates.truncated``) or the answer held fewer than were shown.

    A role no rule lets read a client is refused (and recorded under ``CLIENT_SEARCH``) before
    anything is looked up. A candidate the policy refuses is left out of the answer and its
    refusal recorded, so the caller cannot tell a withheld person from no match. For the same
    reason the answer is said truncated only when the caller was shown every candidate found:
    otherwise the flag would count people it withholds (a refused caller learning that more
    than ``CANDIDATES_PER_KEY`` clients share a key)."""
    probe = probe_from(query)
    await access.require_role(principal, Action.READ_CLIENT, reader.purpose, CLIENT_SEARCH)
    # Catching up is safe beside registrations and other replicas (it only moves forward).
    await directory.refresh()
    found = await directory.candidates(probe)
    shown, disclosures, cut = await disclosed_candidates(
        store, access, principal, reader.purpose, found.candidates, fits=fits
    )
    return shown, disclosures, cut or (found.truncated and len(shown) == len(found.candidates))


async def disclosed_candidates(
    store: EventStore,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    candidates: Sequence[DuplicateCandidate],
    shown_fields: Sequence[str] = (),
    fits: Fits = lambda _: True,
) -> tuple[list[DuplicateCandidate], list[Disclosure], bool]:
    """Of ``candidates``, those the policy lets ``principal`` see (each decided like
    ``GetClient``), with their disclosures (one per case allowing it, as ``client_decisions``);
    a refused one's refusal is recorded.
    ``shown_fields``: what of each is shown, when narrower than its identity (a refusal's).
    ``fits``: whether an answer showing these candidates stays within its bound; the first
    allowed candidate past it ends the list (the first is always shown), neither shown nor
    recorded, nor any after it: the third value says the list was cut so."""
    shown: list[DuplicateCandidate] = []
    disclosures: list[Disclosure] = []
    for candidate in candidates:
        decided = await _client_decisions(
            store, access, principal, purpose, candidate.client_id, CLIENT_SEARCH
        )
        allowing = _allowing(decided)
        if not allowing:
            with contextlib.suppress(AccessDenied):
                await access.refuse(
                    principal, Action.READ_CLIENT, purpose, decided[0][0], decided[0][1]
                )
            continue
        if shown and not fits([*shown, candidate]):
            return shown, disclosures, True
        shown.append(candidate)
        disclosures.extend(
            Disclosure(case_id, decision, None, (), CLIENT_SECTIONS, tuple(shown_fields))
            for case_id, decision in allowing
        )
    return shown, disclosures, False


def registration_purpose(role: Role) -> AccessPurpose:
    """A registration states no purpose: the possible duplicates it turns up are read under
    the purpose the matrix gives the caller's role for the agency's clients (the front desk
    and intake workers: direct care; coordinators: coordination)."""
    for rule in RULES:
        if (
            role in rule.roles
            and Action.READ_CLIENT in rule.actions
            and rule.relationship is Relationship.AGENCY_STAFF
        ):
            return min(rule.purposes)
    return AccessPurpose.DIRECT_CARE


async def get_case(
    store: EventStore,
    closures: ClosureLog,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    case_id: str,
) -> tuple[CaseView, Decision]:
    """The case and the decision allowing ``principal`` to read it. Decided (a refusal
    recorded) before an unknown case is told NOT_FOUND, so a refused caller gets the same
    refusal whether or not the case exists; the case's stream is read first only for the
    policy facts it holds (a consent revoked here counts at once)."""
    required_id("case_id", case_id)
    history = await store.read_stream(case_stream(case_id))
    own = _own_entries(history)
    facts = await access.reader_facts(
        principal, Action.READ_CASE, purpose, case_id, own, subject=case_id
    )
    decision = await access.authorize(principal, Action.READ_CASE, purpose, facts)
    case = case_from(history)
    if case is None:
        raise NotFound("case", case_id)
    client = client_from(await store.read_stream(client_stream(case.opened.client_id)))
    return CaseView(case, client, await closures.closures(case_id), facts), decision


def _own_entries(history: Sequence[RecordedEvent]) -> list[Entry]:
    """The policy facts in a case's stream here (consents, emergency accesses): they count on
    the very next read, before the bus brings them back to the facts projection."""
    return [entry for entry in map(entry_of, history) if entry is not None]


async def client_decisions(
    store: EventStore,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    client_id: str,
) -> list[tuple[str, Decision]]:
    """Where a read of the client's record is recorded, each with the decision it is recorded
    under: those of their cases (or the client's id when they have none) whose own decision
    allows it, each with its own rule, consent and emergency access. The record is one, shown
    under each case that allows it; a case that refuses is no part of that and is not
    recorded as read (another case's emergency access or consent names nothing of it). None
    allowing, the refusal is recorded and raised, before the client is looked up, so a
    refused caller gets the same refusal whether or not the client exists."""
    decided = await _client_decisions(store, access, principal, purpose, client_id, client_id)
    allowing = _allowing(decided)
    if not allowing:
        await access.refuse(principal, Action.READ_CLIENT, purpose, decided[0][0], decided[0][1])
    return allowing


def _allowing(decided: Sequence[tuple[str, Decision]]) -> list[tuple[str, Decision]]:
    return [(case_id, decision) for case_id, decision in decided if decision.allowed]


async def _client_decisions(
    store: EventStore,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    client_id: str,
    subject: str,
) -> list[tuple[str, Decision]]:
    """The policy's decision on each of the client's cases (on the client's id alone when
    they have none): showing who a client is shows part of each of their cases. Each case's
    facts include what this store holds, as ``get_case``'s do: a consent revoked or an
    emergency access closed here refuses the next read of the client too. A decision that
    does not disclose who the client is (a partner whose consent covers its referral but not
    the identity) refuses: ``sections-not-covered``. ``subject``: what the request asked
    about (the client, or ``CLIENT_SEARCH`` for a candidate a search found), which facts not
    caught up name: the cases were looked up and none is decided yet."""
    case_ids = await access.cases_of_client(client_id)
    decisions: list[tuple[str, Decision]] = []
    for case_id in case_ids or [client_id]:
        # A client without a case has no case stream to read.
        own = _own_entries(await store.read_stream(case_stream(case_id))) if case_ids else []
        facts = (
            await access.reader_facts(
                principal, Action.READ_CLIENT, purpose, case_id, own, subject=subject
            )
            if case_ids
            else await access.case_facts(case_id, own)
        )
        if not case_ids:
            # The registration is the client's own record from the start (right of access,
            # GDPR Art. 15): the client-self relationship needs only who the client is.
            facts = replace(facts, client_id=client_id)
        decision = access.decide(principal, Action.READ_CLIENT, purpose, facts)
        decisions.append(
            (case_id, answerable(Disclosure(case_id, decision, None, (), CLIENT_SECTIONS)))
        )
    return decisions
