from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from casetrail_platform.commands import (
    AlreadyExists,
    InvalidCommand,
    NotAllowed,
    NotFound,
    RuleBroken,
)
from casetrail_platform.identity.principal import Principal
from events.catalog.access import (
    AccessPurpose,
    ConsentGranted,
    ConsentRecipient,
    RecipientKind,
    RecordSection,
)
from events.catalog.assessment import (
    AssessedNeed,
    AssessmentFactors,
    InitialAssessmentRecorded,
)
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import (
    CaseOpened,
    CaseReopened,
    PresentingNeed,
    ReferralSource,
    ReferralSourceKind,
)
from events.catalog.clients import ClientRegistered, PersonName
from events.catalog.emergency import (
    EmergencyAccessClosed,
    EmergencyAccessOpened,
    EmergencyAccessReviewed,
)
from events.catalog.values import NeedCategory, Urgency
from events.envelope import RecordedEvent
from services.intake.domain.cases import (
    case_from,
    check_factors,
    decide_assessment,
    decide_opening,
    decide_reopening,
)
from services.intake.domain.clients import check_date_of_birth, decide_registration
from services.intake.domain.consents import decide_consent, decide_revocation
from services.intake.domain.emergency import decide_close, decide_review
from services.intake.domain.emergency import decide_opening as decide_emergency_opening
from services.intake.domain.errors import PossibleDuplicateClient
from services.intake.domain.matching import DuplicateCandidate
from services.intake.domain.permissions import ALLOWED, Action, require_role
from tests.unit.intake.support import recorded

CASE = "case1"
STREAM = f"case-{CASE}"

REGISTRATION = ClientRegistered(
    client_id="c2", name=PersonName(given_names="Marco", family_name="Bellini")
)
CANDIDATE = DuplicateCandidate("c1", REGISTRATION.name, None, False, ())
OPENED = CaseOpened(
    case_id=CASE,
    client_id="c1",
    referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
    presenting_needs=(PresentingNeed(category=NeedCategory.HOUSING),),
)
REOPENED = CaseReopened(case_id=CASE, reason="Evicted again")


def assessment(assessment_id: str = "a1") -> InitialAssessmentRecorded:
    return InitialAssessmentRecorded(
        case_id=CASE,
        assessment_id=assessment_id,
        factors=AssessmentFactors(economic="No income since March"),
        needs=(AssessedNeed(category=NeedCategory.HOUSING, urgency=Urgency.URGENT),),
    )


def consent() -> ConsentGranted:
    return ConsentGranted(
        case_id=CASE,
        client_id="c1",
        consent_id="consent-1",
        scope=(RecordSection.IDENTITY,),
        recipient=ConsentRecipient(
            kind=RecipientKind.AGENCY, recipient_id="bay-recovery", name="Bay Recovery"
        ),
        purpose=AccessPurpose.DIRECT_CARE,
    )


def history(*events: CaseEvent) -> list[RecordedEvent]:
    return [recorded(event, STREAM, number) for number, event in enumerate(events, start=1)]


def test_a_new_person_is_registered() -> None:
    assert decide_registration([], REGISTRATION, [], False) == [REGISTRATION]


def test_a_possible_duplicate_is_refused_with_its_candidates() -> None:
    with pytest.raises(PossibleDuplicateClient) as refused:
        decide_registration([], REGISTRATION, [CANDIDATE], False)
    assert refused.value.candidates == (CANDIDATE,)
    assert isinstance(refused.value, AlreadyExists)


def test_a_confirmed_non_duplicate_is_registered_naming_whom_it_is_not() -> None:
    [registered] = decide_registration([], REGISTRATION, [CANDIDATE], True)
    assert registered == REGISTRATION.model_copy(update={"confirmed_not_duplicate_of": ("c1",)})
    assert registered.confirmed_not_duplicate_of == (CANDIDATE.client_id,)


def test_a_registration_naming_one_person_twice_is_never_built() -> None:
    # The directory answers each client once (matching.candidates); were it to answer one
    # twice, the registration would break its own rule (confirmed_not_duplicate_of unique),
    # be stored, and make the client's stream unreadable: it is refused before.
    with pytest.raises(ValidationError) as refused:
        decide_registration([], REGISTRATION, [CANDIDATE, CANDIDATE], True)
    assert [error["loc"] for error in refused.value.errors()] == [("confirmed_not_duplicate_of",)]


def test_a_client_stream_is_written_once() -> None:
    with pytest.raises(AlreadyExists):
        decide_registration(history(REGISTRATION), REGISTRATION, [], False)


def test_a_birth_date_in_the_future_is_refused() -> None:
    check_date_of_birth(date(2024, 1, 1), today=date(2024, 1, 1))
    with pytest.raises(InvalidCommand) as refused:
        check_date_of_birth(date(2024, 1, 2), today=date(2024, 1, 1))
    assert refused.value.violations[0].field == "date_of_birth"


def test_a_case_is_opened_once() -> None:
    assert decide_opening([], OPENED, None) == [OPENED]
    with pytest.raises(AlreadyExists):
        decide_opening(history(OPENED), OPENED, None)


def test_an_unknown_case_cannot_be_assessed_or_reopened() -> None:
    with pytest.raises(NotFound):
        decide_assessment([], assessment(), closures=0, erased=None, occurred_at=None)
    with pytest.raises(NotFound):
        decide_reopening([], REOPENED, closures=1, erased=None, closed_at=None, occurred_at=None)


def test_one_initial_assessment_per_opening() -> None:
    assert decide_assessment(
        history(OPENED), assessment(), closures=0, erased=None, occurred_at=None
    ) == [assessment()]
    with pytest.raises(RuleBroken) as refused:
        decide_assessment(
            history(OPENED, assessment()), assessment("a2"), 0, None, occurred_at=None
        )
    assert refused.value.rule == "INITIAL_ASSESSMENT_ALREADY_RECORDED"
    assert refused.value.details["assessment_id"] == "a1"


def test_a_closed_case_is_not_assessed() -> None:
    with pytest.raises(RuleBroken) as refused:
        decide_assessment(history(OPENED), assessment(), closures=1, erased=None, occurred_at=None)
    assert refused.value.rule == "CASE_CLOSED"


def test_only_a_closed_case_is_reopened() -> None:
    with pytest.raises(RuleBroken) as refused:
        decide_reopening(history(OPENED), REOPENED, 0, None, closed_at=None, occurred_at=None)
    assert refused.value.rule == "CASE_NOT_CLOSED"
    assert refused.value.details["subject"] == f"case/{CASE}"
    assert decide_reopening(
        history(OPENED), REOPENED, 1, None, closed_at=None, occurred_at=None
    ) == [REOPENED]


def test_a_reopened_case_is_open_until_closed_again() -> None:
    reopened_once = history(OPENED, assessment(), REOPENED)
    with pytest.raises(RuleBroken):
        decide_reopening(
            reopened_once, REOPENED, closures=1, erased=None, closed_at=None, occurred_at=None
        )
    assert decide_reopening(
        reopened_once, REOPENED, closures=2, erased=None, closed_at=None, occurred_at=None
    ) == [REOPENED]


def test_a_reopened_case_gets_a_new_initial_assessment() -> None:
    case = case_from(history(OPENED, assessment(), REOPENED))
    assert case is not None
    assert case.current_assessment_id is None
    assert case.version == 3
    assert decide_assessment(
        history(OPENED, assessment(), REOPENED), assessment("a2"), 1, None, occurred_at=None
    )


def test_an_assessment_describes_at_least_one_factor() -> None:
    with pytest.raises(InvalidCommand) as refused:
        check_factors(AssessmentFactors())
    assert refused.value.violations[0].field == "factors"
    check_factors(AssessmentFactors(cultural="Practising Catholic"))


@pytest.mark.parametrize(
    ("action", "allowed"),
    [
        (Action.REGISTER_CLIENT, {"receptionist", "intake_worker", "coordinator"}),
        (Action.OPEN_CASE, {"receptionist", "intake_worker", "coordinator"}),
        (
            Action.RECORD_ASSESSMENT,
            {"intake_worker", "coordinator", "social_worker", "case_manager"},
        ),
        (Action.REOPEN_CASE, {"coordinator", "supervisor"}),
    ],
)
def test_roles_per_command(action: Action, allowed: set[str]) -> None:
    assert {role.value for role in ALLOWED[action]} == allowed
    for role in Role:
        if role.value in allowed:
            require_role(role, action)
        else:
            with pytest.raises(NotAllowed):
                require_role(role, action)


def test_the_receptionist_does_not_read_assessments() -> None:
    with pytest.raises(NotAllowed):
        require_role(Role.RECEPTIONIST, Action.READ_CASE)
    require_role(Role.RECEPTIONIST, Action.READ_CLIENT)


def test_a_case_command_is_not_dated_before_the_case_was_opened() -> None:
    opened = history(OPENED)
    opened_at = opened[0].metadata.occurred_at
    before = opened_at - timedelta(days=1)

    with pytest.raises(InvalidCommand) as assessed:
        decide_assessment(
            opened, assessment(), 0, None, occurred_at=datetime(1975, 1, 1, tzinfo=UTC)
        )
    [problem] = assessed.value.violations
    assert problem.field == "context.occurred_at"
    assert f"must not be before case {CASE} was opened" in problem.problem
    with pytest.raises(InvalidCommand):
        decide_consent(opened, consent(), None, occurred_at=before, closures=())
    with pytest.raises(InvalidCommand):
        decide_revocation(opened, CASE, "consent-1", None, occurred_at=before, closures=())
    assert decide_assessment(opened, assessment(), 0, None, occurred_at=opened_at)
    assert decide_consent(
        opened, consent(), None, occurred_at=opened_at + timedelta(hours=1), closures=()
    )


def test_a_reopening_follows_the_closure_and_the_new_assessment_the_reopening() -> None:
    opened = history(OPENED, assessment())
    closed_at = opened[-1].metadata.occurred_at + timedelta(days=3)

    with pytest.raises(InvalidCommand) as refused:
        decide_reopening(
            opened,
            REOPENED,
            1,
            None,
            closed_at=closed_at,
            occurred_at=closed_at - timedelta(hours=1),
        )
    [problem] = refused.value.violations
    assert problem.field == "context.occurred_at"
    assert f"must not be before case {CASE} was last closed" in problem.problem
    assert decide_reopening(opened, REOPENED, 1, None, closed_at=closed_at, occurred_at=closed_at)

    reopened_at = closed_at + timedelta(days=1)
    reopened = [*opened, recorded(REOPENED, STREAM, 3, occurred_at=reopened_at)]
    with pytest.raises(InvalidCommand) as assessed:
        decide_assessment(
            reopened, assessment("a2"), 1, None, occurred_at=reopened_at - timedelta(minutes=1)
        )
    assert f"must not be before case {CASE} was last reopened" in str(assessed.value.violations)


def test_a_consent_is_not_revoked_before_it_was_granted() -> None:
    """Dated before the grant, the revocation would leave audit's state as it happened
    showing the consent still in force."""
    opened_at = datetime.now(UTC) - timedelta(days=2)
    granted_at = opened_at + timedelta(days=1)
    granted = [
        recorded(OPENED, STREAM, 1, occurred_at=opened_at),
        recorded(consent(), STREAM, 2, occurred_at=granted_at),
    ]
    with pytest.raises(InvalidCommand) as refused:
        decide_revocation(
            granted,
            CASE,
            "consent-1",
            None,
            occurred_at=granted_at - timedelta(hours=1),
            closures=(),
        )
    [problem] = refused.value.violations
    assert problem.field == "context.occurred_at"
    assert f"must not be before consent consent-1 was granted ({granted_at.isoformat()})" in (
        problem.problem
    )
    assert decide_revocation(granted, CASE, "consent-1", None, occurred_at=granted_at, closures=())


def test_a_consent_is_revoked_only_while_it_is_in_force() -> None:
    """An expired consent discloses nothing more: a revocation recorded after its expiry would
    tell the client and audit that their withdrawal ended it."""
    granted_at = datetime.now(UTC) - timedelta(days=2)
    expires_at = granted_at + timedelta(days=1)
    expiring = consent().model_copy(update={"expires_at": expires_at})
    granted = [
        recorded(OPENED, STREAM, 1, occurred_at=granted_at),
        recorded(expiring, STREAM, 2, occurred_at=granted_at),
    ]
    for moment in (expires_at, expires_at + timedelta(hours=1)):
        with pytest.raises(RuleBroken) as refused:
            decide_revocation(granted, CASE, "consent-1", None, occurred_at=moment, closures=())
        assert refused.value.rule == "CONSENT_EXPIRED"
        assert refused.value.details["expires_at"] == expires_at.isoformat()
    # Written up late, a withdrawal stated while the consent ran is still recorded.
    before = expires_at - timedelta(seconds=1)
    assert decide_revocation(granted, CASE, "consent-1", None, occurred_at=before, closures=())


def test_an_emergency_access_is_reviewed_and_closed_not_before_it_was_opened() -> None:
    now = datetime.now(UTC)
    opened_at = now - timedelta(minutes=10)
    access = EmergencyAccessOpened(
        case_id=CASE,
        emergency_access_id="ea1",
        grantee_id="u1",
        grantee_role=Role.SOCIAL_WORKER,
        grantee_agency_id="eastbay-dss",
        entitlement="break_glass",
        reason="Client unreachable, fall alarm raised",
        opened_at=opened_at,
        expires_at=opened_at + timedelta(hours=1),
    )
    broken_into = [
        recorded(OPENED, STREAM, 1, occurred_at=now - timedelta(days=2)),
        recorded(access, STREAM, 2, occurred_at=opened_at),
    ]
    before = now - timedelta(days=1)  # after the case's opening, before the access's
    review = EmergencyAccessReviewed(
        case_id=CASE,
        emergency_access_id="ea1",
        reviewer_id="sup",
        reviewer_role=Role.SUPERVISOR,
        outcome="justified",
    )
    grantee = Principal("u1", Role.SOCIAL_WORKER, "eastbay-dss", "test")
    closing = EmergencyAccessClosed(
        case_id=CASE,
        emergency_access_id="ea1",
        closed_by_id="u1",
        closed_by_role=Role.SOCIAL_WORKER,
        closed_at=now,
    )
    opened = f"must not be before emergency access ea1 was opened ({opened_at.isoformat()})"
    with pytest.raises(InvalidCommand) as reviewed:
        decide_review(broken_into, review, occurred_at=before, closures=())
    assert [(p.field, opened in p.problem) for p in reviewed.value.violations] == [
        ("context.occurred_at", True)
    ]
    with pytest.raises(InvalidCommand) as closed:
        decide_close(
            broken_into,
            closing,
            closer=grantee,
            may_oversee=True,
            occurred_at=before,
            closures=(),
        )
    assert [(p.field, opened in p.problem) for p in closed.value.violations] == [
        ("context.occurred_at", True)
    ]
    assert decide_review(broken_into, review, occurred_at=opened_at, closures=()) == [review]
    assert decide_close(
        broken_into, closing, closer=grantee, may_oversee=True, occurred_at=opened_at, closures=()
    ) == [closing]


def test_on_a_reopened_case_consents_and_emergency_accesses_follow_the_closure() -> None:
    """As planning refuses a command on a reopened case dated before its last closure: audit's
    state as it happened would show the consent given, or the glass broken, on the closed case.
    A case never reopened is held to its opening only."""
    opened_at = datetime.now(UTC) - timedelta(days=3)
    closed_at = opened_at + timedelta(days=1)
    reopened_at = closed_at + timedelta(hours=2)
    reopened = [
        recorded(OPENED, STREAM, 1, occurred_at=opened_at),
        recorded(REOPENED, STREAM, 2, occurred_at=reopened_at),
    ]
    before = closed_at - timedelta(minutes=30)
    access = EmergencyAccessOpened(
        case_id=CASE,
        emergency_access_id="ea1",
        grantee_id="u1",
        grantee_role=Role.SOCIAL_WORKER,
        grantee_agency_id="eastbay-dss",
        entitlement="break_glass",
        reason="Client unreachable, fall alarm raised",
        opened_at=before,
        expires_at=before + timedelta(hours=1),
    )
    closed = f"must not be before case {CASE} was closed before its last reopening"
    with pytest.raises(InvalidCommand) as consented:
        decide_consent(reopened, consent(), None, occurred_at=before, closures=[closed_at])
    with pytest.raises(InvalidCommand) as broken_into:
        decide_emergency_opening(reopened, access, None, occurred_at=before, closures=[closed_at])
    for refused in (consented, broken_into):
        [problem] = refused.value.violations
        assert (problem.field, closed in problem.problem) == ("context.occurred_at", True)
    granted = [*reopened, recorded(consent(), STREAM, 3, occurred_at=closed_at)]
    with pytest.raises(InvalidCommand):
        decide_revocation(
            granted, CASE, "consent-1", None, occurred_at=before, closures=[closed_at]
        )
    assert decide_consent(reopened, consent(), None, occurred_at=closed_at, closures=[closed_at])
    # Not reopened (a closed case's wrap-up), or a log behind: held to the opening only.
    assert decide_consent(reopened[:1], consent(), None, occurred_at=before, closures=[closed_at])
    assert decide_consent(reopened, consent(), None, occurred_at=before, closures=[])
