"""The access policy as a table: each row a caller, a purpose and a case's facts, and the
decision expected (rule, sensitive fields disclosed or not, consent relied on)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.decide import (
    decide,
    decide_case_work,
    decide_disclosure,
    decide_emergency_opening,
)
from casetrail_platform.policy.facts import (
    AcceptedReferral,
    CaseFacts,
    Consent,
    EmergencyAccess,
    fold,
)
from casetrail_platform.policy.matrix import REFUSALS, RULES
from casetrail_platform.policy.vocabulary import REFERRED_SECTIONS, Action, Obligation
from events.catalog.access import AccessPurpose as P
from events.catalog.access import RecipientKind, RecordSection, SensitiveCategory
from events.catalog.base import Role

HOME = "eastbay-dss"
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
CONSENT = Consent(
    "consent-1",
    "harbour",
    RecipientKind.AGENCY,
    P.COORDINATION,
    frozenset(REFERRED_SECTIONS),
    frozenset({SensitiveCategory.SUBSTANCE_USE}),
    NOW + timedelta(days=30),
)
FACTS = CaseFacts(
    "case-1",
    client_id="client-1",
    worker_id="sw-ana",
    worker_team="team-east",
    referrals=(
        AcceptedReferral(
            "referral-1", "harbour", "consent-1", frozenset({SensitiveCategory.SUBSTANCE_USE})
        ),
    ),
    categories=frozenset({SensitiveCategory.SUBSTANCE_USE}),
    consents=(CONSENT,),
)


EMERGENCY = EmergencyAccess("emergency-1", "sw-noor", NOW - timedelta(minutes=5), NOW)
"""An emergency access of sw-noor that ends at NOW (open just before it)."""
OPEN_EMERGENCY = replace(FACTS, emergencies=(replace(EMERGENCY, expires_at=NOW + timedelta(1)),))
ENDED_EMERGENCY = replace(FACTS, emergencies=(EMERGENCY,))


def who(subject: str, role: Role, agency: str = HOME, team: str | None = None) -> Principal:
    return Principal(subject, role, agency, "test", team=team)


# (principal, action, purpose, facts, expected rule, sensitive disclosed)
ROWS = [
    (
        who("sw-ana", Role.SOCIAL_WORKER),
        Action.READ_CASE,
        P.DIRECT_CARE,
        FACTS,
        "assigned-worker",
        True,
    ),
    (
        who("sw-bo", Role.SOCIAL_WORKER),
        Action.READ_CASE,
        P.DIRECT_CARE,
        FACTS,
        "no-relationship",
        False,
    ),
    (
        who("sw-ana", Role.SOCIAL_WORKER),
        Action.READ_CASE,
        P.SUPERVISION,
        FACTS,
        "purpose-not-permitted",
        False,
    ),
    (
        who("sup", Role.SUPERVISOR, team="team-east"),
        Action.READ_CASE,
        P.SUPERVISION,
        FACTS,
        "team-supervisor",
        True,
    ),
    (
        who("sup", Role.SUPERVISOR, team="team-west"),
        Action.READ_CASE,
        P.SUPERVISION,
        FACTS,
        "no-relationship",
        False,
    ),
    (
        who("sup", Role.SUPERVISOR, team="team-east"),
        Action.READ_CASE,
        P.DIRECT_CARE,
        FACTS,
        "purpose-not-permitted",
        False,
    ),
    (
        who("coord", Role.COORDINATOR),
        Action.READ_CASE,
        P.COORDINATION,
        FACTS,
        "agency-coordinator",
        False,
    ),
    (
        who("coord", Role.COORDINATOR),
        Action.READ_CASE,
        P.CONFIDENTIALITY_REVIEW,
        FACTS,
        "purpose-not-permitted",
        False,
    ),
    (who("desk", Role.RECEPTIONIST), Action.READ_CLIENT, P.DIRECT_CARE, FACTS, "front-desk", False),
    (
        who("desk", Role.RECEPTIONIST),
        Action.READ_CASE,
        P.DIRECT_CARE,
        FACTS,
        "role-not-allowed",  # the front desk registers people, it reads no case
        False,
    ),
    (
        who("desk", Role.RECEPTIONIST),
        Action.READ_CASE,
        P.EMERGENCY,
        replace(
            FACTS, emergencies=(replace(EMERGENCY, subject="desk", expires_at=NOW + timedelta(1)),)
        ),
        "role-not-allowed",  # not even under an emergency access (none can be opened for it)
        False,
    ),
    (
        who("kim", Role.AUDITOR),
        Action.READ_CASE,
        P.CONFIDENTIALITY_REVIEW,
        FACTS,
        "auditor-review",
        True,
    ),
    (
        who("kim", Role.AUDITOR),
        Action.READ_CASE,
        P.SUPERVISION,
        FACTS,
        "purpose-not-permitted",
        False,
    ),
    (who("kim", Role.AUDITOR), Action.TAIL, P.CONFIDENTIALITY_REVIEW, None, "auditor-review", True),
    (
        who("sw-ana", Role.SOCIAL_WORKER),
        Action.TAIL,
        P.DIRECT_CARE,
        None,
        "role-not-allowed",
        False,
    ),
    (
        who("h", Role.PARTNER_AGENCY, "harbour"),
        Action.READ_CASE,
        P.COORDINATION,
        FACTS,
        "referral-recipient",
        True,
    ),
    (
        who("h", Role.PARTNER_AGENCY, "harbour"),
        Action.READ_CASE,
        P.DIRECT_CARE,
        FACTS,
        "consent-required",
        False,
    ),
    (
        who("o", Role.PARTNER_AGENCY, "other"),
        Action.READ_CASE,
        P.COORDINATION,
        FACTS,
        "no-relationship",
        False,
    ),
    (who("client-1", Role.CLIENT), Action.READ_CASE, P.CLIENT_REQUEST, FACTS, "client-self", True),
    (
        who("kim", Role.AUDITOR),
        Action.READ_LEDGER,
        P.CONFIDENTIALITY_REVIEW,
        None,
        "ledger-review",
        False,
    ),
    (
        who("sup", Role.SUPERVISOR, team="team-east"),
        Action.READ_LEDGER,
        P.SUPERVISION,
        None,
        "ledger-supervision",
        False,
    ),
    (
        who("sup", Role.SUPERVISOR, team="team-east"),
        Action.READ_LEDGER,
        P.DIRECT_CARE,
        None,
        "purpose-not-permitted",
        False,
    ),
    (
        who("kim", Role.AUDITOR),
        Action.READ_CASELOADS,
        P.CONFIDENTIALITY_REVIEW,
        None,
        "auditor-review",
        True,
    ),
    (
        who("maria", Role.COORDINATOR),
        Action.READ_CASELOADS,
        P.COORDINATION,
        None,
        "role-not-allowed",
        False,
    ),
    (
        who("sw-ana", Role.SOCIAL_WORKER),
        Action.READ_LEDGER,
        P.DIRECT_CARE,
        None,
        "role-not-allowed",
        False,
    ),
    (
        who("client-2", Role.CLIENT),
        Action.READ_CASE,
        P.CLIENT_REQUEST,
        FACTS,
        "no-relationship",
        False,
    ),
    # The need-to-know reviews: the accounting of disclosures for auditors and the client,
    # a case as a user saw it for auditors only.
    (
        who("kim", Role.AUDITOR),
        Action.ACCOUNT_DISCLOSURES,
        P.CONFIDENTIALITY_REVIEW,
        FACTS,
        "auditor-review",
        True,
    ),
    (
        who("client-1", Role.CLIENT),
        Action.ACCOUNT_DISCLOSURES,
        P.CLIENT_REQUEST,
        FACTS,
        "client-self",
        True,
    ),
    (
        who("kim", Role.AUDITOR),
        Action.REVIEW_AS_SEEN,
        P.LEGAL_OBLIGATION,
        FACTS,
        "purpose-not-permitted",
        False,
    ),
    (
        who("sup", Role.SUPERVISOR, team="team-east"),
        Action.REVIEW_AS_SEEN,
        P.SUPERVISION,
        FACTS,
        "role-not-allowed",
        False,
    ),
    # Break the glass: the grantee, for purpose emergency, inside the time box only.
    (
        who("sw-noor", Role.SOCIAL_WORKER),
        Action.READ_CASE,
        P.EMERGENCY,
        OPEN_EMERGENCY,
        "break-glass",
        True,
    ),
    (
        who("sw-noor", Role.SOCIAL_WORKER),
        Action.READ_TRAIL,
        P.EMERGENCY,
        OPEN_EMERGENCY,
        "break-glass",
        True,
    ),
    (
        who("sw-noor", Role.SOCIAL_WORKER),
        Action.READ_CASE,
        P.EMERGENCY,
        ENDED_EMERGENCY,
        "emergency-access-expired",
        False,
    ),
    (
        who("sw-noor", Role.SOCIAL_WORKER),
        Action.READ_CASE,
        P.DIRECT_CARE,
        OPEN_EMERGENCY,
        "no-relationship",  # an emergency access is for purpose emergency only
        False,
    ),
    (
        who("sw-noor", Role.SOCIAL_WORKER),
        Action.READ_TRAIL,
        P.DIRECT_CARE,
        OPEN_EMERGENCY,
        "role-not-allowed",
        False,
    ),
    (
        who("sw-bo", Role.SOCIAL_WORKER),
        Action.READ_CASE,
        P.EMERGENCY,
        OPEN_EMERGENCY,
        "no-relationship",  # someone else's emergency access
        False,
    ),
    (
        who("sw-noor", Role.SOCIAL_WORKER),
        Action.EXPORT,
        P.EMERGENCY,
        OPEN_EMERGENCY,
        "role-not-allowed",
        False,
    ),
]


@pytest.mark.parametrize(("principal", "action", "purpose", "facts", "rule", "sensitive"), ROWS)
def test_the_matrix(
    principal: Principal,
    action: Action,
    purpose: P,
    facts: CaseFacts | None,
    rule: str,
    sensitive: bool,
) -> None:
    decision = decide(principal, action, purpose, facts, home_agency=HOME, now=NOW)
    assert decision.rule == rule
    assert decision.allowed is (rule not in REFUSALS)
    assert decision.sensitive is sensitive
    assert decision.policy_version


def test_every_rule_of_the_matrix_is_exercised() -> None:
    exercised = {row[4] for row in ROWS}
    assert {rule.name for rule in RULES} - exercised == {
        "intake-worker",
        "auditor-legal-obligation",
    }


def test_an_emergency_read_names_the_emergency_access() -> None:
    noor = who("sw-noor", Role.SOCIAL_WORKER)
    decision = decide(
        noor, Action.READ_CASE, P.EMERGENCY, OPEN_EMERGENCY, home_agency=HOME, now=NOW
    )
    assert decision.emergency_access_id == "emergency-1"
    before = decide(
        noor,
        Action.READ_CASE,
        P.EMERGENCY,
        OPEN_EMERGENCY,
        home_agency=HOME,
        now=EMERGENCY.opened_at - timedelta(seconds=1),
    )
    assert (before.allowed, before.rule) == (False, "no-relationship")


@pytest.mark.parametrize(
    ("principal", "rule"),
    [
        (
            Principal("sw", Role.SOCIAL_WORKER, HOME, "t", entitlements=frozenset({"break_glass"})),
            "break-glass-opening",
        ),
        (who("sw", Role.SOCIAL_WORKER), "entitlement-required"),
        (
            Principal(
                "sw", Role.SOCIAL_WORKER, "other", "t", entitlements=frozenset({"break_glass"})
            ),
            "no-relationship",
        ),
        (
            Principal("kim", Role.AUDITOR, HOME, "t", entitlements=frozenset({"break_glass"})),
            "role-not-allowed",
        ),
        (
            Principal("c", Role.CLIENT, HOME, "t", entitlements=frozenset({"break_glass"})),
            "role-not-allowed",
        ),
        (
            Principal(
                "desk", Role.RECEPTIONIST, HOME, "t", entitlements=frozenset({"break_glass"})
            ),
            "role-not-allowed",
        ),
    ],
)
def test_breaking_the_glass_needs_a_staff_role_of_the_agency_and_the_entitlement(
    principal: Principal, rule: str
) -> None:
    decision = decide_emergency_opening(principal, home_agency=HOME)
    assert decision.rule == rule
    assert decision.allowed is (rule not in REFUSALS)


def test_a_partner_sees_the_referred_scope_under_consent_with_the_notice() -> None:
    partner = who("h", Role.PARTNER_AGENCY, "harbour")
    decision = decide(partner, Action.READ_CASE, P.COORDINATION, FACTS, home_agency=HOME, now=NOW)
    assert decision.consent_ids == ("consent-1",)
    assert decision.sections == REFERRED_SECTIONS
    assert decision.obligations == (Obligation.REDISCLOSURE_NOTICE,)
    assert not decision.discloses(RecordSection.ASSESSMENT)


def test_a_partner_is_given_the_notice_when_a_referrals_consent_names_substance_use() -> None:
    # A home-care referral made under a consent naming substance use may carry an
    # addiction-counselling service (ScheduleService books one only so), shown with its
    # sensitive values: substance-use data disclosed under consent, which the notice follows.
    partner = who("h", Role.PARTNER_AGENCY, "harbour")
    home_care = AcceptedReferral("referral-1", "harbour", "consent-1", frozenset())
    facts = replace(FACTS, referrals=(home_care,))
    decision = decide(partner, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW)
    assert decision.sensitive
    assert decision.obligations == (Obligation.REDISCLOSURE_NOTICE,)


def test_a_partner_is_bounded_by_each_referral_it_accepted() -> None:
    harbour = who("h", Role.PARTNER_AGENCY, "harbour")
    narrow = Consent(
        "consent-2",
        "harbour",
        RecipientKind.AGENCY,
        P.COORDINATION,
        frozenset({RecordSection.REFERRALS}),
        frozenset(),
        NOW + timedelta(days=30),
    )
    facts = replace(
        FACTS,
        referrals=(
            AcceptedReferral("referral-2", "harbour", "consent-2", frozenset()),
            AcceptedReferral("referral-3", "sunrise", "consent-3", frozenset()),
        ),
        consents=(CONSENT, narrow),
    )
    decision = decide(harbour, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW)
    # Its own referral only, under that referral's consent: identity and services are not in
    # it, although another consent to the same agency would cover them.
    assert decision.referral_ids == frozenset({"referral-2"})
    assert decision.sections == frozenset({RecordSection.REFERRALS})
    assert decision.consent_ids == ("consent-2",)
    # The referral's need is not sensitive, so nothing sensitive of it is withheld.
    assert decision.sensitive
    assert decision.obligations == ()


def test_a_partner_reading_under_several_referrals_names_every_consent_relied_on() -> None:
    """Each accepted referral counts under its own consent, and the sections shown are their
    union: the access record must name every one of them, not the first only, or audit's log
    and the client's accounting show a disclosure under one consent that another allowed."""
    harbour = who("h", Role.PARTNER_AGENCY, "harbour")
    second = replace(CONSENT, consent_id="consent-2", sections=frozenset({RecordSection.SERVICES}))
    second = replace(second, sections=second.sections | {RecordSection.REFERRALS})
    facts = replace(
        FACTS,
        referrals=(
            *FACTS.referrals,
            AcceptedReferral("referral-2", "harbour", "consent-2", frozenset()),
        ),
        consents=(CONSENT, second),
    )
    decision = decide(harbour, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW)
    assert decision.referral_ids == frozenset({"referral-1", "referral-2"})
    assert decision.consent_ids == ("consent-1", "consent-2")
    # Two referrals under one consent name it once.
    shared = replace(
        facts,
        referrals=(
            *FACTS.referrals,
            AcceptedReferral("referral-2", "harbour", "consent-1", frozenset()),
        ),
    )
    decision = decide(harbour, Action.READ_CASE, P.COORDINATION, shared, home_agency=HOME, now=NOW)
    assert decision.consent_ids == ("consent-1",)


def test_the_consent_a_referral_was_made_under_bounds_it_even_when_another_covers() -> None:
    harbour = who("h", Role.PARTNER_AGENCY, "harbour")
    other = replace(CONSENT, consent_id="consent-9")
    facts = replace(FACTS, consents=(replace(CONSENT, revoked=True), other))
    decision = decide(harbour, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW)
    assert (decision.allowed, decision.rule) == (False, "consent-required")


def test_a_completed_or_declined_referral_ends_the_partners_relationship() -> None:
    def entry(kind: str, at: int, **fields: object) -> dict[str, object]:
        moment = (NOW + timedelta(seconds=at)).isoformat()
        return {"type": f"casetrail.referral.{kind}", "recorded_at": moment, **fields}

    made = entry("made", 1, referral_id="r-1", provider_id="harbour", categories=[])
    accepted = entry("accepted", 2, referral_id="r-1", provider_id="harbour")
    facts = fold("case-1", [made, accepted])
    assert facts.referrals == (AcceptedReferral("r-1", "harbour", None, frozenset()),)
    for ending in ("completed", "declined"):
        ended = fold("case-1", [made, accepted, entry(ending, 3, referral_id="r-1")])
        assert ended.referrals == ()
        decision = decide(
            who("h", Role.PARTNER_AGENCY, "harbour"),
            Action.READ_CASE,
            P.COORDINATION,
            ended,
            home_agency=HOME,
            now=NOW,
        )
        assert decision.rule == "no-relationship"


def test_closing_the_case_ends_the_partners_relationship_until_it_is_reopened() -> None:
    def entry(kind: str, at: int, **fields: object) -> dict[str, object]:
        moment = (NOW + timedelta(seconds=at)).isoformat()
        return {"type": f"casetrail.{kind}", "recorded_at": moment, **fields}

    made = entry("referral.made", 1, referral_id="r-1", provider_id="harbour", categories=[])
    accepted = entry("referral.accepted", 2, referral_id="r-1", provider_id="harbour")
    closed, reopened = entry("case.closed", 3), entry("case.reopened", 4)
    closed_again = entry("case.closed", 5)
    partner = who("h", Role.PARTNER_AGENCY, "harbour")
    consent = replace(CONSENT, categories=frozenset())

    def rule(*entries: dict[str, object], as_of: datetime | None = None) -> str:
        facts = replace(fold("case-1", entries, as_of=as_of), consents=(consent,))
        decision = decide(
            partner, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW
        )
        return decision.rule

    assert rule(made, accepted) == "referral-recipient"
    assert rule(made, accepted, closed) == "no-relationship"
    assert rule(made, accepted, closed, reopened) == "referral-recipient"
    assert rule(made, accepted, closed, reopened, closed_again) == "no-relationship"
    # Recorded by two services' clocks, a reopening may bear an earlier time than the closure.
    early_reopening = entry("case.reopened", 3)
    late_closure = entry("case.closed", 4)
    assert rule(made, accepted, early_reopening, late_closure) == "referral-recipient"
    # As the partner stood before the closure (a review "as seen at T").
    before = NOW + timedelta(seconds=2, milliseconds=500)
    assert rule(made, accepted, closed, as_of=before) == "referral-recipient"


def test_a_withdrawn_referral_ends_the_partners_relationship_even_after_a_reopening() -> None:
    def entry(kind: str, at: int, **fields: object) -> dict[str, object]:
        moment = (NOW + timedelta(seconds=at)).isoformat()
        return {"type": f"casetrail.{kind}", "recorded_at": moment, **fields}

    made = entry("referral.made", 1, referral_id="r-1", provider_id="harbour", categories=[])
    accepted = entry("referral.accepted", 2, referral_id="r-1", provider_id="harbour")
    withdrawn = entry("referral.withdrawn", 3, referral_id="r-1", provider_id="harbour")
    partner = who("h", Role.PARTNER_AGENCY, "harbour")
    consent = replace(CONSENT, categories=frozenset())

    def rule(*entries: dict[str, object], as_of: datetime | None = None) -> str:
        facts = replace(fold("case-1", entries, as_of=as_of), consents=(consent,))
        decision = decide(
            partner, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW
        )
        return decision.rule

    assert rule(made, accepted, withdrawn) == "no-relationship"
    # Withdrawn by the closure, then the case reopened: unlike a closure alone, the withdrawal
    # is not undone by the reopening.
    closed, reopened = entry("case.closed", 3), entry("case.reopened", 5)
    by_closure = entry("referral.withdrawn", 4, referral_id="r-1", provider_id="harbour")
    assert rule(made, accepted, closed, by_closure, reopened) == "no-relationship"
    # As the partner stood before the withdrawal (a review "as seen at T").
    before = NOW + timedelta(seconds=2, milliseconds=500)
    assert rule(made, accepted, withdrawn, as_of=before) == "referral-recipient"


def test_revoked_or_expired_consent_refuses_the_next_read() -> None:
    partner = who("h", Role.PARTNER_AGENCY, "harbour")
    for consent in (replace(CONSENT, revoked=True), replace(CONSENT, expires_at=NOW)):
        facts = replace(FACTS, consents=(consent,))
        decision = decide(
            partner, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW
        )
        assert (decision.allowed, decision.rule) == (False, "consent-required")


def test_a_referral_needs_consent_naming_recipient_purpose_scope_and_category() -> None:
    coordinator = who("coord", Role.COORDINATOR)
    sections = frozenset({RecordSection.REFERRALS})
    substance = frozenset({SensitiveCategory.SUBSTANCE_USE})
    allowed = decide_disclosure(
        coordinator,
        P.COORDINATION,
        FACTS,
        "harbour",
        sections,
        substance,
        home_agency=HOME,
        now=NOW,
    )
    assert (allowed.allowed, allowed.consent_ids) == (True, ("consent-1",))
    assert allowed.obligations == (Obligation.REDISCLOSURE_NOTICE,)
    other = decide_disclosure(
        coordinator,
        P.COORDINATION,
        FACTS,
        "elsewhere",
        sections,
        substance,
        home_agency=HOME,
        now=NOW,
    )
    assert (other.allowed, other.rule) == (False, "consent-required")
    assert "elsewhere" in other.reason
    legal = decide_disclosure(
        coordinator,
        P.LEGAL_OBLIGATION,
        FACTS,
        "court",
        sections,
        substance,
        home_agency=HOME,
        now=NOW,
    )
    assert legal.rule == "exception-legal-obligation"


def test_an_emergency_exception_is_the_grantees_of_its_agency_not_a_namesakes() -> None:
    """Matched on ``sub`` alone, a token of another agency naming the grantee's ``sub`` sent the
    case to a provider under the grantee's break-the-glass access."""
    sections = frozenset({RecordSection.REFERRALS})
    kept = replace(EMERGENCY, expires_at=NOW + timedelta(1), agency=HOME)
    for facts in (replace(FACTS, emergencies=(kept,)), OPEN_EMERGENCY):  # older entries: no agency
        decided = {
            agency: decide_disclosure(
                who("sw-noor", Role.SOCIAL_WORKER, agency),
                P.EMERGENCY,
                facts,
                "elsewhere",
                sections,
                frozenset(),
                home_agency=HOME,
                now=NOW,
            ).rule
            for agency in (HOME, "westside-dss")
        }
        assert decided == {HOME: "exception-emergency", "westside-dss": "consent-required"}
    elsewhere = replace(FACTS, emergencies=(replace(kept, agency="westside-dss"),))
    namesake = who("sw-noor", Role.SOCIAL_WORKER)
    assert (
        decide(namesake, Action.READ_CASE, P.EMERGENCY, elsewhere, home_agency=HOME, now=NOW).rule
        == "no-relationship"
    )


def test_the_emergency_basis_is_the_callers_open_emergency_access_never_a_consent() -> None:
    emergency_consent = replace(CONSENT, consent_id="consent-9", purpose=P.EMERGENCY)
    facts = replace(FACTS, consents=(emergency_consent,))
    decision = decide_disclosure(
        who("sw-noor", Role.SOCIAL_WORKER),
        P.EMERGENCY,
        facts,
        "harbour",
        frozenset({RecordSection.REFERRALS}),
        frozenset(),
        home_agency=HOME,
        now=NOW,
    )
    assert (decision.allowed, decision.rule, decision.consent_ids) == (
        False,
        "consent-required",
        (),
    )
    assert "emergency access" in decision.reason


def test_a_consent_is_the_agency_it_names_not_a_namesake_of_another_agency() -> None:
    """Consents were matched on the caller's agency or ``sub``: a consent to the person dr.lee
    let a caller of ``sub`` dr.lee at any agency holding a referral made without consent read
    the referred scope, and an agency's consent let another agency's caller of the agency's
    id as ``sub``. A consent names an agency, or a person of no agency it says."""

    def entry(kind: str, at: int, **fields: object) -> dict[str, object]:
        moment = (NOW + timedelta(seconds=at)).isoformat()
        return {"type": f"casetrail.{kind}", "recorded_at": moment, "sequence": at, **fields}

    def granted(recipient: str, kind: str | None) -> dict[str, object]:
        fields = {"recipient_id": recipient} | ({} if kind is None else {"recipient_kind": kind})
        return entry(
            "consent.granted",
            1,
            consent_id="consent-1",
            client_id="client-1",
            purpose="coordination",
            sections=["identity", "referrals", "services"],
            categories=[],
            expires_at=None,
            **fields,
        )

    def rule(consent: dict[str, object], subject: str, agency: str = "harbour") -> str:
        # Referred under the legal-obligation exception: no consent of its own.
        made = entry("referral.made", 2, referral_id="r-1", provider_id=agency, consent_id=None)
        accepted = entry("referral.accepted", 3, referral_id="r-1", provider_id=agency)
        facts = fold("case-1", [consent, made, accepted])
        caller = who(subject, Role.PARTNER_AGENCY, agency)
        return decide(
            caller, Action.READ_CASE, P.COORDINATION, facts, home_agency=HOME, now=NOW
        ).rule

    to_dr_lee = granted("dr.lee", "person")
    assert rule(to_dr_lee, "dr.lee") == rule(to_dr_lee, "nurse.kim") == "consent-required"
    to_harbour = granted("harbour", "agency")
    assert rule(to_harbour, "nurse.kim") == "referral-recipient"
    assert rule(to_harbour, "harbour", agency="sunrise") == "consent-required"
    # A person whose id is the agency's is not the agency.
    assert rule(granted("harbour", "person"), "nurse.kim") == "consent-required"
    # An entry kept before entries held the recipient's kind could be either: it covers none.
    assert rule(granted("harbour", None), "nurse.kim") == "consent-required"
    person_named_harbour = fold("case-1", [granted("harbour", "person")])
    disclosed = decide_disclosure(
        who("coord", Role.COORDINATOR),
        P.COORDINATION,
        person_named_harbour,
        "harbour",
        frozenset({RecordSection.REFERRALS}),
        frozenset(),
        home_agency=HOME,
        now=NOW,
    )
    assert disclosed.rule == "consent-required"


def test_a_closed_emergency_access_grants_nothing_from_its_closing() -> None:
    opened = {
        "type": "casetrail.emergency_access.opened",
        "recorded_at": NOW.isoformat(),
        "emergency_access_id": "emergency-1",
        "grantee_id": "sw-noor",
        "opened_at": NOW.isoformat(),
        "expires_at": (NOW + timedelta(hours=1)).isoformat(),
    }
    closed_at = NOW + timedelta(minutes=10)
    closed = {
        "type": "casetrail.emergency_access.closed",
        "recorded_at": closed_at.isoformat(),
        "emergency_access_id": "emergency-1",
        "closed_at": closed_at.isoformat(),
    }
    noor = who("sw-noor", Role.SOCIAL_WORKER)

    def rule(facts: CaseFacts, at: datetime) -> str:
        return decide(noor, Action.READ_CASE, P.EMERGENCY, facts, home_agency=HOME, now=at).rule

    facts = fold("case-1", [opened, closed])
    assert rule(facts, closed_at - timedelta(seconds=1)) == "break-glass"
    assert rule(facts, closed_at) == "emergency-access-expired"
    # As it stood before the closing was recorded, the access still ran.
    before = fold("case-1", [opened, closed], as_of=closed_at - timedelta(seconds=1))
    assert rule(before, closed_at + timedelta(minutes=1)) == "break-glass"


@pytest.mark.parametrize(
    ("caller", "facts", "rule"),
    [
        (who("sw-ana", Role.SOCIAL_WORKER), FACTS, "assigned-worker"),
        (who("sw-ana", Role.CASE_MANAGER), FACTS, "assigned-worker"),
        # Another worker of the same team, or of none: the case is not theirs to record on.
        (who("cm-dana", Role.CASE_MANAGER, team="team-east"), FACTS, "no-relationship"),
        # The assigned worker's namesake at another agency is someone else.
        (who("sw-ana", Role.SOCIAL_WORKER, agency="westside"), FACTS, "no-relationship"),
        # Before any worker is assigned (an unknown case id too): no worker carries it.
        (who("sw-ana", Role.SOCIAL_WORKER), fold("case-new", ()), "no-relationship"),
        # An emergency access lets the grantee read the case, not record its work.
        (who("sw-noor", Role.SOCIAL_WORKER), OPEN_EMERGENCY, "no-relationship"),
    ],
)
def test_a_case_carrying_worker_records_intakes_case_work_only_on_the_case_they_carry(
    caller: Principal, facts: CaseFacts, rule: str
) -> None:
    """Intake's assessment and consents by a case manager or social worker: only as the
    case's assigned worker, as planning and coordination hold them (before, their role
    alone let them record on any case of the agency)."""
    decision = decide_case_work(caller, facts, home_agency=HOME, now=NOW)
    assert (decision.allowed, decision.rule) == (rule != "no-relationship", rule)
