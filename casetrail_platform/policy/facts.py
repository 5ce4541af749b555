"""The facts the policy decides on, learnt from case events: relationships, consents,
emergency accesses.

A case's facts are kept as the list of the fact-bearing events' essentials (``entry_of``), each
with its recorded-at time, and folded on use (``fold``). Folding only the entries recorded up
to T gives the facts as they stood at T, which "as user U saw it at time T" needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from events.catalog import access, assessment, assignment, cases, emergency, referrals
from events.catalog.access import AccessPurpose, RecipientKind, RecordSection, SensitiveCategory
from events.envelope import RecordedEvent

Entry = dict[str, Any]

FACT_EVENT_TYPES = frozenset(
    {
        cases.CaseOpened.event_type,
        cases.CaseClosed.event_type,
        cases.CaseReopened.event_type,
        assessment.InitialAssessmentRecorded.event_type,
        assignment.CaseAssigned.event_type,
        assignment.CaseReassigned.event_type,
        referrals.ReferralMade.event_type,
        referrals.ReferralAccepted.event_type,
        referrals.ReferralDeclined.event_type,
        referrals.ReferralCompleted.event_type,
        referrals.ReferralWithdrawn.event_type,
        access.ConsentGranted.event_type,
        access.ConsentRevoked.event_type,
        emergency.EmergencyAccessOpened.event_type,
        emergency.EmergencyAccessClosed.event_type,
    }
)

_CATEGORIES = frozenset(category.value for category in SensitiveCategory)


@dataclass(frozen=True, slots=True)
class Consent:
    consent_id: str
    recipient_id: str
    recipient_kind: RecipientKind | None
    """Whether ``recipient_id`` names an agency or a person (``None``: an entry kept before
    entries held it, which could be either). A person is named by an id unique within an
    agency the consent does not name, so only an agency's consent is one's to rely on."""
    purpose: AccessPurpose
    sections: frozenset[RecordSection]
    categories: frozenset[SensitiveCategory]
    expires_at: datetime | None
    revoked: bool = False

    def in_force(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def covers(
        self,
        agency: str,
        purpose: AccessPurpose,
        sections: Iterable[RecordSection],
        now: datetime,
    ) -> bool:
        """Whether the consent, in force, discloses ``sections`` to ``agency`` for
        ``purpose``: a consent to a person covers no agency, not even one of the person's
        id (nor an agency's caller of that ``sub``, who may be anyone at any agency)."""
        return (
            self.in_force(now)
            and self.recipient_kind is RecipientKind.AGENCY
            and self.recipient_id == agency
            and self.purpose is purpose
            and set(sections) <= self.sections
        )


@dataclass(frozen=True, slots=True)
class EmergencyAccess:
    """A break-the-glass access: ``subject`` of ``agency`` may read the case until
    ``expires_at`` (its time box's end, or when it was closed if earlier)."""

    access_id: str
    subject: str
    opened_at: datetime
    expires_at: datetime
    agency: str | None = None
    """The grantee's agency (``None``: kept before entries held it; only the case's agency's
    staff ever opened one). A token's ``sub`` is unique within its agency only: another
    agency's caller of the same ``sub`` is someone else."""

    def open_at(self, now: datetime) -> bool:
        return self.opened_at <= now < self.expires_at

    def granted_to(self, subject: str, agency: str) -> bool:
        return self.subject == subject and self.agency in (None, agency)


@dataclass(frozen=True, slots=True)
class AcceptedReferral:
    """A referral the provider accepted and that still runs (neither completed, declined nor
    withdrawn, on a case that is open): what a partner agency may see of the case is bounded
    by it."""

    referral_id: str
    provider_id: str
    consent_id: str | None
    """The consent the referral was made under (``None``: an exception, or v1 data)."""
    categories: frozenset[SensitiveCategory] = frozenset()
    """The sensitive category of the need referred, if any."""


@dataclass(frozen=True, slots=True)
class CaseFacts:
    case_id: str
    client_id: str | None = None
    worker_id: str | None = None
    worker_team: str | None = None
    assignment_sequence: int | None = None
    """Where the assignment the worker and team come from (``CaseAssigned``/``CaseReassigned``,
    only coordination records them) sits in coordination's case stream: its ``sequence``
    (``None``: no assignment, or one kept before entries held their sequence). A service that
    learnt of a later one by another way knows these facts are behind
    (``AccessControl.require_supervision``)."""
    referrals: tuple[AcceptedReferral, ...] = ()
    """Referrals accepted and still running, in the order they were accepted. None while the
    case is closed: closure is the discharge, so a partner agency's part in the case ends with
    it (and its accepted referrals run again if the case is reopened)."""
    categories: frozenset[SensitiveCategory] = frozenset()
    """The sensitive categories of need the record holds (from intake and the assessment)."""
    consents: tuple[Consent, ...] = ()
    emergencies: tuple[EmergencyAccess, ...] = ()
    known: bool = True
    """False when no fact-bearing event of the case has arrived (yet)."""

    @property
    def referred_to(self) -> frozenset[str]:
        """Providers (agencies) that accepted a referral still running."""
        return frozenset(referral.provider_id for referral in self.referrals)

    def referrals_to(self, provider_id: str) -> tuple[AcceptedReferral, ...]:
        return tuple(r for r in self.referrals if r.provider_id == provider_id)

    def consent(self, consent_id: str) -> Consent | None:
        return next((c for c in self.consents if c.consent_id == consent_id), None)

    def emergency_access_of(
        self, subject: str, agency: str, now: datetime
    ) -> EmergencyAccess | None:
        for grant in self.emergencies:
            if grant.granted_to(subject, agency) and grant.open_at(now):
                return grant
        return None

    def emergency_access_ended(self, subject: str, agency: str, now: datetime) -> bool:
        """Whether ``subject`` of ``agency`` had an emergency access to the case whose time box
        is over."""
        return any(
            grant.granted_to(subject, agency) and now >= grant.expires_at
            for grant in self.emergencies
        )

    def consent_covering(
        self,
        agency: str,
        purpose: AccessPurpose,
        sections: Iterable[RecordSection],
        now: datetime,
    ) -> Consent | None:
        """The latest consent that ``covers`` ``agency``."""
        needed = tuple(sections)
        for consent in reversed(self.consents):
            if consent.covers(agency, purpose, needed, now):
                return consent
        return None


def unknown_case(case_id: str) -> CaseFacts:
    return CaseFacts(case_id, known=False)


def no_case_of(client_id: str) -> CaseFacts:
    """The facts a read about a client of whom no case is known is decided on (an id that is
    no client at all among them): the client themself and the agency's staff stand to them as
    to any client of the agency, nobody by a case. Decided before anything is said of the
    client, so that a caller refused learns nothing of whether they exist."""
    return replace(unknown_case(client_id), client_id=client_id)


def entry_of(recorded: RecordedEvent) -> Entry | None:
    """The essentials of a fact-bearing event (``None`` for others), JSON-ready."""
    if recorded.event_type not in FACT_EVENT_TYPES:
        return None  # known from the type: the data is not decoded (every read records one)
    event = recorded.event
    entry: Entry
    match event:
        case cases.CaseOpened():
            entry = {
                "client_id": event.client_id,
                "categories": _sensitive(n.category.value for n in event.presenting_needs),
            }
        case cases.CaseClosed() | cases.CaseReopened():
            entry = {}
        case assessment.InitialAssessmentRecorded():
            entry = {"categories": _sensitive(n.category.value for n in event.needs)}
        case assignment.CaseAssigned() | assignment.CaseReassigned():
            entry = {"worker_id": event.worker_id, "worker_team": event.worker_team}
        case referrals.ReferralMade():
            entry = {
                "referral_id": event.referral_id,
                "provider_id": event.provider.provider_id,
                "categories": _sensitive([event.need_category.value]),
                "consent_id": event.consent_id,
            }
        case (
            referrals.ReferralAccepted()
            | referrals.ReferralDeclined()
            | referrals.ReferralCompleted()
            | referrals.ReferralWithdrawn()
        ):
            entry = {"referral_id": event.referral_id, "provider_id": event.provider_id}
        case access.ConsentGranted():
            entry = {
                "consent_id": event.consent_id,
                "client_id": event.client_id,
                "recipient_id": event.recipient.recipient_id,
                "recipient_kind": event.recipient.kind.value,
                "purpose": event.purpose.value,
                "sections": [section.value for section in event.scope],
                "categories": [category.value for category in event.categories],
                "expires_at": None if event.expires_at is None else event.expires_at.isoformat(),
            }
        case access.ConsentRevoked():
            entry = {"consent_id": event.consent_id}
        case emergency.EmergencyAccessOpened():
            entry = {
                "emergency_access_id": event.emergency_access_id,
                "grantee_id": event.grantee_id,
                "grantee_agency_id": event.grantee_agency_id,
                "opened_at": event.opened_at.isoformat(),
                "expires_at": event.expires_at.isoformat(),
            }
        case emergency.EmergencyAccessClosed():
            entry = {
                "emergency_access_id": event.emergency_access_id,
                "closed_at": event.closed_at.isoformat(),
            }
        case _:
            return None
    entry["type"] = event.event_type
    entry["event_id"] = str(recorded.event_id)
    entry["recorded_at"] = recorded.recorded_at.isoformat()
    entry["sequence"] = recorded.sequence
    return entry


def entry_order(entry: Mapping[str, Any]) -> tuple[str, int]:
    """Where an entry falls among a case's: by when it was recorded, then (events appended
    together, at one moment) by its stream's sequence, whatever order they arrived in.
    Entries kept before they held the sequence come first among those of their moment."""
    return str(entry["recorded_at"]), int(entry.get("sequence", 0))


def stored_order(entry: Mapping[str, Any]) -> tuple[str, int, str]:
    """``entry_order``, the event id settling ties: the order a case's entries are stored in,
    so that a document of them is the one a rebuild makes whatever order the bus brought the
    events in (the policy's facts, audit's timeline's)."""
    return (*entry_order(entry), str(entry["event_id"]))


def fold(
    case_id: str, entries: Iterable[Mapping[str, Any]], *, as_of: datetime | None = None
) -> CaseFacts:
    """The case's facts from its entries (in recorded order), up to ``as_of`` when given."""
    folding = Fold(case_id)
    for entry in in_order(entries, as_of=as_of):
        folding.take(entry)
    return folding.facts()


def in_order(
    entries: Iterable[Mapping[str, Any]], *, as_of: datetime | None = None
) -> list[Mapping[str, Any]]:
    """``entries`` in the order ``Fold`` takes them (``entry_order``: recorded-at, then the
    stream's sequence), up to ``as_of``."""
    ordered = sorted(entries, key=entry_order)
    if as_of is None:
        return ordered
    for index, entry in enumerate(ordered):
        if datetime.fromisoformat(entry["recorded_at"]) > as_of:
            return ordered[:index]
    return ordered


class Fold:
    """``fold`` an entry at a time (``in_order``), so that a caller may let others run between
    entries: a case worked for years has thousands."""

    def __init__(self, case_id: str) -> None:
        self._case_id = case_id
        self._client_id: str | None = None
        self._worker_id: str | None = None
        self._worker_team: str | None = None
        self._assignment_sequence: int | None = None
        self._made: dict[str, Mapping[str, Any]] = {}
        self._accepted: dict[str, str] = {}
        self._categories: set[str] = set()
        self._consents: dict[str, Consent] = {}
        self._emergencies: dict[str, EmergencyAccess] = {}
        self._closures = self._reopens = 0
        self._known = False

    def take(self, entry: Mapping[str, Any]) -> None:
        self._known = True
        kind = entry["type"]
        self._categories.update(
            entry.get("categories", ()) if kind != access.ConsentGranted.event_type else ()
        )
        if kind == cases.CaseOpened.event_type:
            self._client_id = entry["client_id"]
        elif kind == cases.CaseClosed.event_type:
            self._closures += 1
        elif kind == cases.CaseReopened.event_type:
            self._reopens += 1
        elif kind in (assignment.CaseAssigned.event_type, assignment.CaseReassigned.event_type):
            self._worker_id, self._worker_team = entry["worker_id"], entry.get("worker_team")
            self._assignment_sequence = entry.get("sequence")
        elif kind == referrals.ReferralMade.event_type:
            self._made[entry["referral_id"]] = entry
        elif kind == referrals.ReferralAccepted.event_type:
            self._accepted[entry["referral_id"]] = entry["provider_id"]
        elif kind in (
            referrals.ReferralDeclined.event_type,
            referrals.ReferralCompleted.event_type,
            # Withdrawn by the agency: the relationship ends for good, even if the case is
            # later reopened (unlike a closure, which only suspends it).
            referrals.ReferralWithdrawn.event_type,
        ):
            self._accepted.pop(entry["referral_id"], None)
        elif kind == access.ConsentGranted.event_type:
            self._client_id = self._client_id or entry["client_id"]
            self._consents[entry["consent_id"]] = _consent(entry)
        elif kind == emergency.EmergencyAccessOpened.event_type:
            self._emergencies[entry["emergency_access_id"]] = EmergencyAccess(
                access_id=entry["emergency_access_id"],
                subject=entry["grantee_id"],
                opened_at=datetime.fromisoformat(entry["opened_at"]),
                expires_at=datetime.fromisoformat(entry["expires_at"]),
                agency=entry.get("grantee_agency_id"),
            )
        elif (
            kind == emergency.EmergencyAccessClosed.event_type
            and entry["emergency_access_id"] in self._emergencies
        ):
            grant = self._emergencies[entry["emergency_access_id"]]
            closed = datetime.fromisoformat(entry["closed_at"])
            self._emergencies[grant.access_id] = replace(
                grant, expires_at=min(grant.expires_at, closed)
            )
        elif kind == access.ConsentRevoked.event_type and entry["consent_id"] in self._consents:
            old = self._consents[entry["consent_id"]]
            self._consents[old.consent_id] = replace(old, revoked=True)

    def facts(self) -> CaseFacts:
        """The facts of the entries taken so far."""
        return CaseFacts(
            self._case_id,
            client_id=self._client_id,
            worker_id=self._worker_id,
            worker_team=self._worker_team,
            assignment_sequence=self._assignment_sequence,
            # Closures (planning's) and reopenings (intake's) are recorded by different
            # services; every reopening follows a closure, so the counts tell which came last.
            referrals=()
            if self._closures > self._reopens
            else tuple(
                _accepted(referral_id, provider_id, self._made.get(referral_id, {}))
                for referral_id, provider_id in self._accepted.items()
            ),
            categories=frozenset(SensitiveCategory(value) for value in self._categories),
            consents=tuple(self._consents.values()),
            emergencies=tuple(self._emergencies.values()),
            known=self._known,
        )


def _accepted(referral_id: str, provider_id: str, made: Mapping[str, Any]) -> AcceptedReferral:
    # Facts stored before referrals carried their consent have no "consent_id": such a
    # referral is bounded by whichever consent in force covers it.
    return AcceptedReferral(
        referral_id,
        provider_id,
        made.get("consent_id"),
        frozenset(SensitiveCategory(value) for value in made.get("categories", ())),
    )


def _consent(entry: Mapping[str, Any]) -> Consent:
    expires = entry.get("expires_at")
    # Defensive: every entry of the projection since v2 keeps its recipient's kind; one
    # without could not tell an agency from a person of the same id, so it covers no one.
    kind = entry.get("recipient_kind")
    return Consent(
        consent_id=entry["consent_id"],
        recipient_id=entry["recipient_id"],
        recipient_kind=None if kind is None else RecipientKind(kind),
        purpose=AccessPurpose(entry["purpose"]),
        sections=frozenset(RecordSection(value) for value in entry["sections"]),
        categories=frozenset(SensitiveCategory(value) for value in entry["categories"]),
        expires_at=None if expires is None else datetime.fromisoformat(expires),
    )


def _sensitive(values: Iterable[str]) -> list[str]:
    return sorted({value for value in values if value in _CATEGORIES})
