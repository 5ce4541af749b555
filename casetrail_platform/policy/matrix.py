"""The authorization matrix, kept as data: role, relationship and purpose to what is disclosed.

Each ``Rule`` allows its ``actions`` to a caller in one of ``roles`` who stands in
``relationship`` to the case and states one of ``purposes``. ``decide`` takes the first rule
that holds. Refusals are named by ``REFUSALS``. The README's security model is this table in
words; tests/e2e/test_access_matrix.py exercises every row through the gRPC API.
"""

from __future__ import annotations

from dataclasses import dataclass

from casetrail_platform.policy.vocabulary import Action, Relationship, Scope, Sensitivity
from events.catalog.access import AccessPurpose
from events.catalog.base import Role


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    roles: frozenset[Role]
    relationship: Relationship
    purposes: frozenset[AccessPurpose]
    actions: frozenset[Action]
    sensitive: Sensitivity
    scope: Scope = Scope.WHOLE
    consent_required: bool = False
    """Nothing is disclosed without a consent in force covering recipient, purpose, sections."""


CASE_READS = frozenset({Action.READ_CLIENT, Action.READ_CASE, Action.LIST_CASES})
OVERSIGHT = frozenset({Action.READ_TRAIL, Action.EXPORT})
REVIEWS = frozenset({Action.ACCOUNT_DISCLOSURES, Action.REVIEW_AS_SEEN})
"""Need-to-know reviews: the accounting of disclosures, a case as a user saw it."""
CARRYING = frozenset({Role.CASE_MANAGER, Role.SOCIAL_WORKER})
CASEWORK = frozenset(
    {
        Role.INTAKE_WORKER,
        Role.COORDINATOR,
        Role.CASE_MANAGER,
        Role.SOCIAL_WORKER,
        Role.SUPERVISOR,
    }
)
"""Staff whose work is the case's content. Not the front desk: receptionists register people
and open cases, they never read one, not even by breaking the glass."""

RULES: tuple[Rule, ...] = (
    # Workers see the cases they carry, all of them.
    Rule(
        "assigned-worker",
        CARRYING,
        Relationship.ASSIGNED_WORKER,
        frozenset({AccessPurpose.DIRECT_CARE, AccessPurpose.COORDINATION}),
        CASE_READS,
        Sensitivity.ALL,
    ),
    # Supervisors see their team's cases, and only to supervise.
    Rule(
        "team-supervisor",
        frozenset({Role.SUPERVISOR}),
        Relationship.TEAM_SUPERVISOR,
        frozenset({AccessPurpose.SUPERVISION}),
        CASE_READS | OVERSIGHT,
        Sensitivity.ALL,
    ),
    # Coordinators assign and coordinate across the agency's cases: no sensitive findings.
    Rule(
        "agency-coordinator",
        frozenset({Role.COORDINATOR}),
        Relationship.AGENCY_STAFF,
        frozenset({AccessPurpose.COORDINATION}),
        CASE_READS,
        Sensitivity.NONE,
    ),
    # Intake workers open cases and take the first assessment; afterwards the record belongs
    # to whoever carries it, so they read it without sensitive fields.
    Rule(
        "intake-worker",
        frozenset({Role.INTAKE_WORKER}),
        Relationship.AGENCY_STAFF,
        frozenset({AccessPurpose.DIRECT_CARE}),
        CASE_READS,
        Sensitivity.NONE,
    ),
    # The front desk registers people: who they are, nothing of their case.
    Rule(
        "front-desk",
        frozenset({Role.RECEPTIONIST}),
        Relationship.AGENCY_STAFF,
        frozenset({AccessPurpose.DIRECT_CARE}),
        frozenset({Action.READ_CLIENT}),
        Sensitivity.NONE,
    ),
    # Confidentiality reviewers see everything, and every look is itself on the record.
    Rule(
        "auditor-review",
        frozenset({Role.AUDITOR}),
        Relationship.AGENCY_STAFF,
        frozenset({AccessPurpose.CONFIDENTIALITY_REVIEW}),
        CASE_READS | OVERSIGHT | frozenset({Action.TAIL, Action.READ_CASELOADS}) | REVIEWS,
        Sensitivity.ALL,
    ),
    Rule(
        "auditor-legal-obligation",
        frozenset({Role.AUDITOR}),
        Relationship.AGENCY_STAFF,
        frozenset({AccessPurpose.LEGAL_OBLIGATION}),
        CASE_READS | frozenset({Action.EXPORT}),
        Sensitivity.ALL,
    ),
    # The ledger proves whole logs: hashes and signatures, no case content (so the reads are
    # not recorded as accesses; a refusal is). An oversight tool, each role for its purpose.
    Rule(
        "ledger-review",
        frozenset({Role.AUDITOR}),
        Relationship.AGENCY_STAFF,
        frozenset({AccessPurpose.CONFIDENTIALITY_REVIEW, AccessPurpose.LEGAL_OBLIGATION}),
        frozenset({Action.READ_LEDGER}),
        Sensitivity.NONE,
    ),
    Rule(
        "ledger-supervision",
        frozenset({Role.SUPERVISOR}),
        Relationship.AGENCY_STAFF,
        frozenset({AccessPurpose.SUPERVISION}),
        frozenset({Action.READ_LEDGER}),
        Sensitivity.NONE,
    ),
    # A partner agency sees the referred scope of a referral it accepted, under consent, while
    # the referral runs: not once it is completed or declined, nor while the case is closed.
    Rule(
        "referral-recipient",
        frozenset({Role.PARTNER_AGENCY}),
        Relationship.REFERRAL_RECIPIENT,
        frozenset({AccessPurpose.COORDINATION, AccessPurpose.DIRECT_CARE}),
        frozenset({Action.READ_CASE, Action.READ_CLIENT}),
        Sensitivity.CONSENTED,
        Scope.REFERRED,
        consent_required=True,
    ),
    # The client sees their own record (GDPR Art. 15) and its accounting of disclosures
    # (HIPAA 45 CFR 164.528).
    Rule(
        "client-self",
        frozenset({Role.CLIENT}),
        Relationship.CLIENT_SELF,
        frozenset({AccessPurpose.CLIENT_REQUEST}),
        frozenset({Action.READ_CASE, Action.READ_CLIENT, Action.ACCOUNT_DISCLOSURES}),
        Sensitivity.ALL,
    ),
    # Break the glass: an open, unexpired emergency access of this caller to this case
    # (intake's OpenEmergencyAccess, recorded before any read under it), the case's history
    # at audit included.
    Rule(
        "break-glass",
        CASEWORK,
        Relationship.EMERGENCY_ACCESS,
        frozenset({AccessPurpose.EMERGENCY}),
        frozenset({Action.READ_CASE, Action.READ_CLIENT, Action.READ_TRAIL}),
        Sensitivity.ALL,
    ),
)

REFUSALS = {
    "role-not-allowed": "no rule lets this role do it",
    "no-relationship": "the caller has no relationship to the case that allows it",
    "purpose-not-permitted": "the stated purpose is not one this relationship allows",
    "consent-required": "no consent in force covers this recipient, purpose and scope",
    "entitlement-required": "the caller's token lacks the entitlement this needs",
    "emergency-access-expired": "the caller's emergency access to this case has ended",
    "sensitive-filter-not-permitted": (
        "a list is filtered on a sensitive need only by a reader the policy shows sensitive"
        " values to: the cases it matched would disclose the need it withholds"
    ),
    "sections-not-covered": (
        "the answer would show sections of the record the decision does not disclose and that"
        " cannot be withheld from it"
    ),
    "part-not-asked": (
        "a part of an all-worker caseload view is answered only to the process of the group"
        " that asked for it"
    ),
}
"""The rules that refuse, with what they mean (also the ErrorInfo reason, upper-cased)."""
