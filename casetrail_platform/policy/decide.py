"""``decide``: the access policy as one pure function."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.facts import AcceptedReferral, CaseFacts, Consent, EmergencyAccess
from casetrail_platform.policy.matrix import REFUSALS, RULES, Rule
from casetrail_platform.policy.vocabulary import (
    BREAK_GLASS_ENTITLEMENT,
    REFERRED_SECTIONS,
    Action,
    Decision,
    Obligation,
    Relationship,
    Scope,
    Sensitivity,
)
from events.catalog.access import AccessPurpose, RecordSection, SensitiveCategory
from events.catalog.base import Role

_ALL_SECTIONS = frozenset(RecordSection)


def relationships(
    principal: Principal, facts: CaseFacts | None, home_agency: str, now: datetime
) -> frozenset[Relationship]:
    """How ``principal`` stands to the case (to the agency, when there is no case)."""
    held = {Relationship.ANYONE}
    staff = principal.agency == home_agency
    if staff:
        held.add(Relationship.AGENCY_STAFF)
    if facts is None:
        return frozenset(held)
    if staff and facts.worker_id is not None and facts.worker_id == principal.subject:
        held.add(Relationship.ASSIGNED_WORKER)
    if staff and principal.team is not None and principal.team == facts.worker_team:
        held.add(Relationship.TEAM_SUPERVISOR)
    if principal.agency in facts.referred_to:
        held.add(Relationship.REFERRAL_RECIPIENT)
    # A token's ``sub`` names someone within its agency only: the client's tokens are the
    # agency's (its issuer, its ``agency`` claim), as its staff's are, and a caller of another
    # agency whose ``sub`` is the client's or a grantee's is someone else.
    if staff and facts.client_id is not None and principal.subject == facts.client_id:
        held.add(Relationship.CLIENT_SELF)
    if _emergency_grant(principal, facts, home_agency, now) is not None:
        held.add(Relationship.EMERGENCY_ACCESS)
    return frozenset(held)


def _emergency_grant(
    principal: Principal, facts: CaseFacts, home_agency: str, now: datetime
) -> EmergencyAccess | None:
    """The open break-the-glass access ``principal`` holds on the case: granted to its subject
    of its agency, which is the case's (only the agency's staff break its glass)."""
    if principal.agency != home_agency:
        return None
    return facts.emergency_access_of(principal.subject, principal.agency, now)


def any_rule_for(role: Role, action: Action, purpose: AccessPurpose | None = None) -> bool:
    """Whether some rule could let ``role`` do ``action`` (for ``purpose``, when given)."""
    return any(_names(rule, role, action, purpose) for rule in RULES)


ENDED_BY_EVENTS = frozenset(
    {
        Relationship.ASSIGNED_WORKER,
        Relationship.TEAM_SUPERVISOR,
        Relationship.REFERRAL_RECIPIENT,
        Relationship.EMERGENCY_ACCESS,
    }
)
"""Relationships an event on the bus can end: a transfer (the worker's, the team's), a
referral withdrawn, completed or declined, a consent revoked, the case closed, an emergency
access closed before its time box (its end by the clock needs no event). The others do not end
by an event (a case's agency, the client themself)."""


def may_rest_on_ended(role: Role, action: Action, purpose: AccessPurpose) -> bool:
    """Whether a rule that could let ``role`` do ``action`` for ``purpose`` rests on a
    relationship an event can end (``ENDED_BY_EVENTS``): such a caller's right must be decided
    on facts holding every event the bus has brought of the case."""
    return any(
        _names(rule, role, action, purpose)
        and purpose in rule.purposes
        and rule.relationship in ENDED_BY_EVENTS
        for rule in RULES
    )


def _names(rule: Rule, role: Role, action: Action, purpose: AccessPurpose | None) -> bool:
    """Whether ``rule`` is about ``role`` doing ``action``. A break-the-glass rule is only for
    purpose ``emergency``: a role that may read a case only under an emergency access is refused
    any other read by its role, before the case is looked up (it learns nothing of it)."""
    return (
        role in rule.roles
        and action in rule.actions
        and (
            purpose is None
            or purpose is AccessPurpose.EMERGENCY
            or rule.relationship is not Relationship.EMERGENCY_ACCESS
        )
    )


def decide(
    principal: Principal,
    action: Action,
    purpose: AccessPurpose,
    facts: CaseFacts | None,
    *,
    home_agency: str,
    now: datetime,
) -> Decision:
    """Whether ``principal`` may do ``action`` for ``purpose`` on the case of ``facts``
    (``None``: an action about no single case, such as following every event)."""
    candidates = [rule for rule in RULES if _names(rule, principal.role, action, purpose)]
    if not candidates:
        return refusal("role-not-allowed")
    held = relationships(principal, facts, home_agency, now)
    if _emergency_ended(principal, purpose, candidates, held, facts, home_agency, now):
        return refusal("emergency-access-expired")
    related = [rule for rule in candidates if rule.relationship in held]
    if not related:
        return refusal("no-relationship")
    fitting = [rule for rule in related if purpose in rule.purposes]
    if not fitting:
        allowed = sorted({p.value for rule in related for p in rule.purposes})
        return refusal("purpose-not-permitted", f"allowed here: {', '.join(allowed)}")
    for rule in fitting:
        decision = _apply(rule, principal, purpose, facts, home_agency, now)
        if decision.allowed:
            return decision
    return _apply(fitting[0], principal, purpose, facts, home_agency, now)


def _emergency_ended(
    principal: Principal,
    purpose: AccessPurpose,
    candidates: list[Rule],
    held: frozenset[Relationship],
    facts: CaseFacts | None,
    home_agency: str,
    now: datetime,
) -> bool:
    """An emergency read by someone whose break-the-glass access to the case is over: refused
    by its own rule, so that the refusal says why."""
    return (
        purpose is AccessPurpose.EMERGENCY
        and facts is not None
        and Relationship.EMERGENCY_ACCESS not in held
        and any(rule.relationship is Relationship.EMERGENCY_ACCESS for rule in candidates)
        and principal.agency == home_agency
        and facts.emergency_access_ended(principal.subject, principal.agency, now)
    )


def decide_emergency_opening(principal: Principal, *, home_agency: str) -> Decision:
    """Whether ``principal`` may break the glass: open an emergency access to a case of the
    agency. A role a break-glass rule names, staff of the agency, and the token's
    ``entitlements`` claim naming ``break_glass`` (the issuer grants it, casetrail never does)."""
    roles = {
        role
        for rule in RULES
        if rule.relationship is Relationship.EMERGENCY_ACCESS
        for role in rule.roles
    }
    if principal.role not in roles:
        return refusal("role-not-allowed")
    if principal.agency != home_agency:
        return refusal("no-relationship")
    if BREAK_GLASS_ENTITLEMENT not in principal.entitlements:
        return refusal(
            "entitlement-required", f"the token's entitlements must name {BREAK_GLASS_ENTITLEMENT}"
        )
    return Decision(True, "break-glass-opening")


def decide_command(principal: Principal, *, home_agency: str) -> Decision:
    """Whether ``principal`` may send a command to the services of ``home_agency`` at all,
    before its role and the case's rules are looked at: the agency's records are written by
    its own staff only, as they are read (``relationships``: another agency's staff hold no
    relationship to its cases). A token's role names a job, not an employer, so a role check
    alone lets another agency's supervisor erase a client. The one exception is the partner
    agency, which by definition acts from its own agency: its commands (answering a referral,
    a service it delivers) are fenced to what is addressed to it by the services' own rules."""
    if _serves(principal, home_agency):
        return Decision(True, "agency-staff")
    return refusal(
        "no-relationship", f"only staff of {home_agency} record on its clients and cases"
    )


def decide_agency_read(principal: Principal, *, home_agency: str) -> Decision:
    """Whether ``principal`` may ask the services of ``home_agency`` for what is the agency's
    own rather than one case's (its staff with their caseloads and credentials, its programmes,
    its budget lines, its lists of cases and emergency accesses), before the role and the
    service's own rules are looked at: as for a command (``decide_command``), its own staff,
    and a partner agency, which the services' role rules then hold to what is addressed to it.
    A role check alone showed another agency's coordinator the staff roster and its auditor
    the budget."""
    if _serves(principal, home_agency):
        return Decision(True, "agency-staff")
    return refusal("no-relationship", f"only staff of {home_agency} read its own records")


def _serves(principal: Principal, home_agency: str) -> bool:
    """Whether the services of ``home_agency`` take ``principal``'s requests at all: its own
    staff's, and a partner agency's, which acts from its own agency by definition."""
    return principal.agency == home_agency or principal.role is Role.PARTNER_AGENCY


def decide_supervision(
    principal: Principal, facts: CaseFacts, *, home_agency: str, now: datetime
) -> Decision:
    """Whether a supervisor may act on the case as its supervisor (close or reopen it): only on
    the cases of their team, as they read only those (``team-supervisor``). A role check alone
    let any team's supervisor close any case of the agency."""
    if Relationship.TEAM_SUPERVISOR in relationships(principal, facts, home_agency, now):
        return Decision(True, "team-supervisor")
    return refusal("no-relationship", "a supervisor acts only on the cases of their team")


def decide_case_work(
    principal: Principal, facts: CaseFacts, *, home_agency: str, now: datetime
) -> Decision:
    """Whether a case manager or social worker may record the case's work at intake (its
    initial assessment, the client's consents and their revocation): only on the case assigned
    to them, as planning and coordination hold them and as they read only those
    (``assigned-worker``). Before any worker is assigned the case is intake's: its intake
    workers and coordinators, who take cases in and assess them, record there (their role,
    the agency's staff, is all they need: ``decide_command``). A role check alone let any
    case manager record a stranger's assessment and withdraw the consents of a case they may
    not read."""
    if Relationship.ASSIGNED_WORKER in relationships(principal, facts, home_agency, now):
        return Decision(True, "assigned-worker")
    return refusal(
        "no-relationship",
        "a case manager or social worker records only on the cases assigned to them",
    )


def decide_client_correction(
    principal: Principal, cases: Sequence[CaseFacts], *, home_agency: str, now: datetime
) -> Decision:
    """Whether ``principal`` may correct who the client is (their date of birth) on the record:
    a coordinator of the agency, who assesses every client against the agency's resources;
    the worker assigned to one of the client's ``cases``, who knows the client; the supervisor
    of that worker's team. Other workers have no reason to rewrite a stranger's record."""
    if principal.role is Role.COORDINATOR:
        if principal.agency == home_agency:
            return Decision(True, "agency-coordinator")
        return refusal("no-relationship", f"only staff of {home_agency} correct its records")
    wanted = (
        Relationship.TEAM_SUPERVISOR
        if principal.role is Role.SUPERVISOR
        else Relationship.ASSIGNED_WORKER
    )
    if any(wanted in relationships(principal, facts, home_agency, now) for facts in cases):
        return Decision(True, wanted.value.replace("_", "-"))
    return refusal(
        "no-relationship",
        "a client's record is corrected by a coordinator, the worker assigned to one of the"
        " client's cases or that worker's supervisor",
    )


def _apply(
    rule: Rule,
    principal: Principal,
    purpose: AccessPurpose,
    facts: CaseFacts | None,
    home_agency: str,
    now: datetime,
) -> Decision:
    sections = REFERRED_SECTIONS if rule.scope is Scope.REFERRED else None
    emergency = None
    if rule.relationship is Relationship.EMERGENCY_ACCESS and facts is not None:
        grant = _emergency_grant(principal, facts, home_agency, now)
        emergency = None if grant is None else grant.access_id
    if not rule.consent_required:
        return Decision(
            True,
            rule.name,
            sections=sections,
            sensitive=rule.sensitive is Sensitivity.ALL,
            emergency_access_id=emergency,
        )
    assert facts is not None, "consent rules are about a case"
    if rule.scope is Scope.REFERRED:
        return _referred(rule, principal, purpose, facts, now)
    # The caller's agency is the recipient: its ``sub`` names someone within it only.
    consent = facts.consent_covering(principal.agency, purpose, sections or _ALL_SECTIONS, now)
    if consent is None:
        return refusal(
            "consent-required",
            f"no consent in force for recipient {principal.agency}, purpose {purpose.value},"
            f" sections {', '.join(sorted(s.value for s in sections or _ALL_SECTIONS))}",
        )
    sensitive = facts.categories <= consent.categories
    notice = (
        (Obligation.REDISCLOSURE_NOTICE,)
        if sensitive and SensitiveCategory.SUBSTANCE_USE in facts.categories
        else ()
    )
    return Decision(
        True,
        rule.name,
        sections=sections,
        sensitive=sensitive,
        consent_ids=(consent.consent_id,),
        obligations=notice,
    )


def _referred(
    rule: Rule, principal: Principal, purpose: AccessPurpose, facts: CaseFacts, now: datetime
) -> Decision:
    """A partner agency's answer, bounded per referral its agency accepted: each referral counts
    under its own consent (the one it was made under, else one in force covering the referral),
    which must name the agency and the purpose; the sections are ``REFERRED_SECTIONS`` as far as
    those consents cover them, the referrals and services only those referrals' own, and the
    sensitive fields only when each consent names its referral's sensitive category; with them
    the redisclosure notice when substance use is among the categories the referrals or their
    consents name. A consent to a person names no agency, so it bounds none
    (``Consent.covers``)."""
    granted: list[tuple[AcceptedReferral, Consent]] = []
    for referral in facts.referrals_to(principal.agency):
        consent = _consent_of(referral, facts, principal.agency, purpose, now)
        if consent is not None:
            granted.append((referral, consent))
    if not granted:
        return refusal(
            "consent-required",
            f"no consent in force for recipient {principal.agency}, purpose {purpose.value},"
            f" sections {RecordSection.REFERRALS.value} of a referral it accepted",
        )
    covered = frozenset().union(*(consent.sections for _, consent in granted))
    sensitive = all(referral.categories <= consent.categories for referral, consent in granted)
    # Not the referrals' needs alone: a service of a referral may tell of a category its consent
    # names (an addiction-counselling service booked from a home-care referral under a consent
    # naming substance use), shown with the referral's sensitive values.
    shown = frozenset().union(
        *(referral.categories | consent.categories for referral, consent in granted)
    )
    notice = (
        (Obligation.REDISCLOSURE_NOTICE,)
        if sensitive and SensitiveCategory.SUBSTANCE_USE in shown
        else ()
    )
    return Decision(
        True,
        rule.name,
        sections=REFERRED_SECTIONS & covered,
        sensitive=sensitive,
        # Every consent the answer rests on: the access record names them all for audit, as
        # the sections shown are their union.
        consent_ids=tuple(dict.fromkeys(consent.consent_id for _, consent in granted)),
        obligations=notice,
        referral_ids=frozenset(referral.referral_id for referral, _ in granted),
    )


def _consent_of(
    referral: AcceptedReferral,
    facts: CaseFacts,
    agency: str,
    purpose: AccessPurpose,
    now: datetime,
) -> Consent | None:
    if referral.consent_id is None:
        return facts.consent_covering(agency, purpose, _REFERRAL, now)
    named = facts.consent(referral.consent_id)
    if named is None or not named.covers(agency, purpose, _REFERRAL, now):
        return None
    return named


_REFERRAL = frozenset({RecordSection.REFERRALS})
"""What every consent a referral was made under covers (``MakeReferral`` checks it)."""


def decide_disclosure(
    principal: Principal,
    purpose: AccessPurpose,
    facts: CaseFacts,
    recipient: str,
    sections: frozenset[RecordSection],
    categories: frozenset[SensitiveCategory],
    *,
    home_agency: str,
    now: datetime,
) -> Decision:
    """Whether the case may be disclosed to ``recipient`` (another agency, say by a
    referral): a consent in force to that agency (not to a person of its id) must cover
    purpose, sections and the sensitive categories sent, unless a documented exception
    applies (``legal_obligation``, or ``emergency`` under the caller's open break-the-glass
    access to this case of ``home_agency``, and only under it)."""
    if purpose is AccessPurpose.LEGAL_OBLIGATION:
        return Decision(True, "exception-legal-obligation")
    if purpose is AccessPurpose.EMERGENCY:
        grant = _emergency_grant(principal, facts, home_agency, now)
        if grant is None:
            # The exception is the break-the-glass access, which supervisors review: a consent
            # whose purpose is emergency must not stand in for it, or the referral is recorded
            # as disclosed in an emergency with no access to review.
            return refusal(
                "consent-required",
                "the emergency basis needs the caller's open emergency access to the case",
            )
        return Decision(True, "exception-emergency", emergency_access_id=grant.access_id)
    consent = facts.consent_covering(recipient, purpose, sections, now)
    if consent is None or not categories <= consent.categories:
        # The sections, never the categories: a refusal's reason reaches status messages, logs
        # and the access log, where no special data may go, and the caller knows what it sent.
        # Said the same whether categories were sent or not, so it tells nothing of them.
        wanted = ", ".join(sorted(s.value for s in sections))
        return refusal(
            "consent-required",
            f"no consent in force for recipient {recipient}, purpose {purpose.value},"
            f" sections {wanted} and the sensitive categories disclosed, if any",
        )
    notice = (
        (Obligation.REDISCLOSURE_NOTICE,) if SensitiveCategory.SUBSTANCE_USE in categories else ()
    )
    return Decision(
        True,
        "disclosure-under-consent",
        consent_ids=(consent.consent_id,),
        obligations=notice,
    )


def refusal(rule: str, detail: str = "") -> Decision:
    """The refusal named ``rule`` (one of ``matrix.REFUSALS``), its meaning as the reason and
    ``detail`` after it: the one way a service states a refusal of its own (e.g. a check
    made before the policy's, recorded through ``AccessControl.refuse``)."""
    reason = REFUSALS[rule] + (f" ({detail})" if detail else "")
    return Decision(False, rule, reason=reason)
