"""The words of the access policy: actions, relationships, obligations, decisions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from events.catalog.access import RecordSection

POLICY_VERSION = "2026.12-4"
"""Changes whenever ``matrix.RULES`` or the way they are read changes; recorded on every
access so a review can tell which policy allowed it."""


class Action(StrEnum):
    """What the caller asks to do; the value names it in refusals."""

    READ_CLIENT = "read a client's record"
    READ_CASE = "read a case"
    LIST_CASES = "list cases"
    READ_TRAIL = "read a case's audit trail"
    EXPORT = "export a case"
    TAIL = "follow every event"
    DISCLOSE = "disclose a case to another agency"
    READ_CASELOADS = "read every worker's caseload"
    """The caseload processor's views: which cases each worker holds, overdue follow-ups."""
    READ_LEDGER = "read the ledger's checkpoints and proofs"
    """Hashes, sizes and signatures of a service's whole log: no case content."""
    ACCOUNT_DISCLOSURES = "account for the disclosures of a client's record"
    REVIEW_AS_SEEN = "review a case as a user saw it"
    BREAK_GLASS = "open an emergency access to a case"
    REVIEW_EMERGENCY_ACCESS = "review an emergency access"
    CLOSE_EMERGENCY_ACCESS = "close an emergency access"
    RECORD_ASSESSMENT = "record a case's initial assessment"
    RECORD_CONSENT = "record a client's consent or its revocation"
    """Intake's commands on a case's work: a case-carrying worker's only on the case they carry
    (``decide.decide_case_work``)."""
    READ_AGENCY = "read the agency's staff or programmes"
    """What is the agency's own and no case's (coordination's ``ListWorkers``,
    ``ListPrograms``): its staff's to read (``decide.decide_agency_read``)."""
    RECORD = "record on the agency's clients and cases"
    """Any command: ``decide.decide_command`` (the services' own rules decide the rest)."""


class Relationship(StrEnum):
    """How the caller stands to the case, learnt from events (``facts.CaseFacts``)."""

    ASSIGNED_WORKER = "assigned_worker"
    TEAM_SUPERVISOR = "team_supervisor"
    AGENCY_STAFF = "agency_staff"
    REFERRAL_RECIPIENT = "referral_recipient"
    CLIENT_SELF = "client_self"
    EMERGENCY_ACCESS = "emergency_access"
    ANYONE = "anyone"
    """Holds for everyone: used by rules that need no relationship (following the whole
    stream of events, which is about no single case)."""


BREAK_GLASS_ENTITLEMENT = "break_glass"
"""The token entitlement (claim ``entitlements``) that lets staff open an emergency access."""


class Sensitivity(StrEnum):
    """What a rule discloses of the fields marked ``x-casetrail-sensitive``."""

    ALL = "all"
    NONE = "none"
    CONSENTED = "consented"
    """Only the sensitive categories the client's consent names."""


class Scope(StrEnum):
    WHOLE = "whole"
    REFERRED = "referred"
    """Per referral the caller's agency accepted: ``REFERRED_SECTIONS`` as far as that
    referral's consent covers them, and of the referrals and services only that referral's."""


REFERRED_SECTIONS = frozenset(
    {RecordSection.IDENTITY, RecordSection.REFERRALS, RecordSection.SERVICES}
)


class Obligation(StrEnum):
    REDISCLOSURE_NOTICE = "redisclosure_notice"
    """42 CFR 2.32: substance-use data disclosed under consent carries this notice."""


REDISCLOSURE_NOTICE_TEXT = (
    "This record, which has been disclosed to you, is protected by federal confidentiality"
    " rules (42 CFR part 2). These rules prohibit you from using or disclosing it in civil,"
    " criminal, administrative or legislative proceedings against the patient, and from"
    " further disclosing it unless the patient's written consent or the rules allow."
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer. ``rule`` names the row of ``matrix.RULES`` that allowed, or the
    refusal rule (``matrix.REFUSALS``) that denied; ``reason`` explains a refusal without
    naming any case content."""

    allowed: bool
    rule: str
    policy_version: str = POLICY_VERSION
    sections: frozenset[RecordSection] | None = None
    """The sections that may be disclosed (``None``: all of them)."""
    sensitive: bool = False
    """Whether fields marked sensitive may be disclosed (else they are redacted)."""
    consent_ids: tuple[str, ...] = ()
    """Every consent the answer rests on (a partner's: each referral's own), in order."""
    emergency_access_id: str | None = None
    obligations: tuple[Obligation, ...] = ()
    reason: str = ""
    referral_ids: frozenset[str] | None = None
    """The referrals the answer is bounded by (a partner agency's); ``None``: not bounded."""

    def discloses(self, section: RecordSection) -> bool:
        return self.allowed and (self.sections is None or section in self.sections)
