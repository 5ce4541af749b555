"""Coordination's pure rules: who may carry a case, overlapping slots, eligibility, budgets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from casetrail_platform.ages import age_on
from casetrail_platform.commands import InvalidCommand, RuleBroken
from events.catalog.assignment import CaseAssigned
from events.catalog.base import Role
from events.catalog.eligibility import EligibilityDetermined, EligibilityFacts
from events.catalog.scheduling import LocationKind, ServiceKind, ServiceLocation
from events.catalog.values import Money, NeedCategory, Provider
from services.coordination.domain import errors
from services.coordination.domain.agency import Program, Worker
from services.coordination.domain.assignment import decide_assignment, fit_refusals, open_needs
from services.coordination.domain.case import CaseState, Referral, ReferralStatus
from services.coordination.domain.commands import AssignCase, DetermineEligibility
from services.coordination.domain.eligibility import (
    RECORDED_AGE,
    decide_eligibility,
    describe_rules,
    evaluate,
    reasons_told,
)
from services.coordination.domain.facts import CaseFacts
from services.coordination.domain.schedule import Schedule, Service, ServiceStatus
from tests.unit.coordination.support import sample_agency

ON = date(2026, 3, 2)
AT = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
COUNSELING_CASE = CaseFacts("case-1", "client-1", (NeedCategory.HOME_CARE, NeedCategory.COUNSELING))


def _worker(worker_id: str) -> Worker:
    worker = sample_agency().worker(worker_id)
    assert worker is not None
    return worker


def _rules(refusals: list[RuleBroken]) -> list[str]:
    return [refusal.rule for refusal in refusals]


def test_a_licensed_social_worker_may_take_counseling() -> None:
    assert fit_refusals("case-1", _worker("sw-lcsw"), COUNSELING_CASE.needs, 0, ON) == []


@pytest.mark.parametrize("worker_id", ["cm-dana", "sw-expired"])
def test_counseling_is_refused_without_a_valid_licence(worker_id: str) -> None:
    refusals = fit_refusals("case-1", _worker(worker_id), COUNSELING_CASE.needs, 0, ON)
    assert _rules(refusals) == [errors.COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER]
    assert "counselor" in refusals[0].details["suggested_referrals"]


def test_substance_use_proposes_an_addiction_counselor_without_naming_the_need() -> None:
    refusals = fit_refusals(
        "case-1", _worker("cm-dana"), (NeedCategory.SUBSTANCE_USE,), 0, ON, sensitive_shown=True
    )
    assert "addiction counselor" in refusals[0].details["suggested_referrals"]
    assert "substance_use" not in str(refusals[0].details) + refusals[0].description


@pytest.mark.parametrize(
    ("needs", "sensitive_shown", "rule"),
    [
        # Shown no need calling for counseling, the reader is not told one does.
        ((NeedCategory.SUBSTANCE_USE,), False, errors.WORKER_LACKS_REQUIRED_CREDENTIAL),
        ((NeedCategory.MENTAL_HEALTH,), False, errors.WORKER_LACKS_REQUIRED_CREDENTIAL),
        ((NeedCategory.SUBSTANCE_USE,), True, errors.COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER),
        # Counseling is no special data: shown, it explains the refusal.
        (
            (NeedCategory.COUNSELING, NeedCategory.SUBSTANCE_USE),
            False,
            errors.COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER,
        ),
    ],
)
def test_a_reader_is_told_of_counseling_only_when_a_need_shown_to_them_calls_for_it(
    needs: tuple[NeedCategory, ...], sensitive_shown: bool, rule: str
) -> None:
    refusals = fit_refusals(
        "case-1", _worker("cm-dana"), needs, 0, ON, sensitive_shown=sensitive_shown
    )
    assert _rules(refusals) == [rule]


def test_a_need_referred_out_no_longer_calls_for_a_licence() -> None:
    state = CaseState()
    state.referrals["r-1"] = Referral(
        "r-1",
        Provider(provider_id="p", name="P"),
        NeedCategory.COUNSELING,
        "therapy",
        "soon",
        ReferralStatus.ACCEPTED,
    )
    needs = open_needs(COUNSELING_CASE, state)
    assert needs == (NeedCategory.HOME_CARE,)
    command = AssignCase(case_id="case-1", worker_id="cm-dana")
    [assigned] = decide_assignment(state, COUNSELING_CASE, _worker("cm-dana"), 0, command, ON)
    assert isinstance(assigned, CaseAssigned)
    assert assigned.matched_needs == (NeedCategory.HOME_CARE,)
    assert assigned.reason == (
        "case_manager fits the case's open needs; caseload 0 of 1 before this case"
    )


def test_every_reason_a_worker_does_not_fit_is_given() -> None:
    refusals = fit_refusals("case-1", _worker("sup-helen"), COUNSELING_CASE.needs, 5, ON)
    assert _rules(refusals) == [
        errors.WORKER_DOES_NOT_CARRY_CASES,
        errors.COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER,
        errors.CASELOAD_FULL,
    ]


def _service(service_id: str, start: datetime, hours: float, status: ServiceStatus) -> Service:
    return Service(
        service_id,
        "case-1",
        ServiceKind.PHYSICAL_THERAPY,
        Provider(provider_id="pt", name="PT clinic"),
        start,
        start + timedelta(hours=hours),
        ServiceLocation(kind=LocationKind.PROVIDER_SITE),
        None,
        None,
        status,
    )


@pytest.mark.parametrize(
    ("start", "end", "clashes"),
    [
        (AT - timedelta(hours=1), AT, False),  # ends as the other starts
        (AT + timedelta(hours=1), AT + timedelta(hours=2), False),  # starts as it ends
        (AT - timedelta(minutes=30), AT + timedelta(minutes=1), True),
        (AT + timedelta(minutes=59), AT + timedelta(hours=3), True),
        (AT + timedelta(minutes=10), AT + timedelta(minutes=20), True),  # inside
        (AT - timedelta(hours=1), AT + timedelta(hours=2), True),  # around
    ],
)
def test_slots_overlap_when_each_starts_before_the_other_ends(
    start: datetime, end: datetime, clashes: bool
) -> None:
    schedule = Schedule(1, {"pt": _service("pt", AT, 1, ServiceStatus.SCHEDULED)})
    assert (schedule.conflict(start, end) is not None) is clashes


@pytest.mark.parametrize(
    ("status", "blocks"),
    [
        (ServiceStatus.SCHEDULED, True),
        # The client was there: another service in that hour would be a second one claimed.
        (ServiceStatus.DELIVERED, True),
        (ServiceStatus.CANCELLED, False),
    ],
)
def test_only_a_cancelled_service_frees_its_slot(status: ServiceStatus, blocks: bool) -> None:
    schedule = Schedule(1, {"pt": _service("pt", AT, 1, status)})
    assert (schedule.conflict(AT, AT + timedelta(hours=1)) is not None) is blocks


def test_a_service_does_not_conflict_with_itself_when_moved() -> None:
    schedule = Schedule(1, {"pt": _service("pt", AT, 1, ServiceStatus.SCHEDULED)})
    assert schedule.conflict(AT, AT + timedelta(minutes=30), ignore="pt") is None


def _usd(cents: int) -> Money:
    return Money(amount_minor_units=cents, currency="USD")


def test_eligibility_gives_a_reason_for_every_rule() -> None:
    program = sample_agency().program("home-care-medicaid-waiver")
    assert program is not None
    eligible, reasons = evaluate(
        program,
        EligibilityFacts(age=78, monthly_income=_usd(145_000), residence="us-ca-alameda"),
    )
    assert eligible
    assert reasons == [
        "age 78 is at least the minimum of 65",
        "monthly income 1450.00 USD is within the limit of 2901.00 USD",
        "residence us-ca-alameda is in the programme's area (us-ca-alameda)",
    ]


def test_one_unmet_rule_makes_the_client_ineligible() -> None:
    program = sample_agency().program("home-care-medicaid-waiver")
    assert program is not None
    eligible, reasons = evaluate(
        program,
        EligibilityFacts(age=78, monthly_income=_usd(400_000), residence="us-ca-alameda"),
    )
    assert not eligible
    assert "monthly income 4000.00 USD is over the limit of 2901.00 USD" in reasons


@pytest.mark.parametrize(
    ("currency", "limit", "income", "limit_told", "income_told"),
    [
        ("JPY", 200_000, 150_000, "200000 JPY", "150000 JPY"),
        ("KWD", 500_000, 450_123, "500.000 KWD", "450.123 KWD"),
        ("USD", 290_100, 185_000, "2901.00 USD", "1850.00 USD"),
    ],
)
def test_amounts_are_told_in_the_currency_s_own_minor_units(
    currency: str, limit: int, income: int, limit_told: str, income_told: str
) -> None:
    program = Program(
        program_id="home-support",
        name="Home support",
        max_monthly_income=Money(amount_minor_units=limit, currency=currency),
    )
    facts = EligibilityFacts(monthly_income=Money(amount_minor_units=income, currency=currency))
    assert evaluate(program, facts)[1] == [
        f"monthly income {income_told} is within the limit of {limit_told}"
    ]
    assert describe_rules(program) == [f"monthly income at most {limit_told}"]


def test_facts_the_rules_need_are_required() -> None:
    program = sample_agency().program("home-care-medicaid-waiver")
    assert program is not None
    with pytest.raises(InvalidCommand) as refused:
        evaluate(
            program,
            EligibilityFacts(monthly_income=Money(amount_minor_units=1, currency="EUR")),
        )
    assert [v.field for v in refused.value.violations] == [
        "facts.age",
        "facts.monthly_income.currency",
        "facts.residence",
    ]


def test_a_programme_without_rules_accepts_everyone() -> None:
    program = sample_agency().program("open-door")
    assert program is not None
    assert evaluate(program, EligibilityFacts()) == (
        True,
        ["Open door drop-in has no eligibility conditions"],
    )


@pytest.mark.parametrize(
    ("born", "age"), [(date(1948, 3, 2), 78), (date(1948, 3, 3), 77), (date(1948, 1, 1), 78)]
)
def test_age_counts_whole_years(born: date, age: int) -> None:
    assert age_on(born, ON) == age


def test_roles_table_lets_only_the_partner_answer_referrals() -> None:
    from services.coordination.domain.permissions import ALLOWED, Action

    assert ALLOWED[Action.ANSWER_REFERRAL] == {Role.PARTNER_AGENCY}
    assert Role.CASE_MANAGER not in ALLOWED[Action.ASSIGN_CASE]


def test_residence_codes_compare_without_letter_case() -> None:
    # The agency's codes and the facts given are held in lower case, so the rule cannot give
    # a wrong "not eligible" on how the code was typed.
    command = DetermineEligibility(
        case_id="case-1",
        program_id="home-care-medicaid-waiver",
        facts=EligibilityFacts(
            age=70,
            monthly_income=Money(amount_minor_units=100, currency="USD"),
            residence="US-CA-ALAMEDA",
        ),
    )
    assert command.facts.residence == "us-ca-alameda"
    program = sample_agency().program("home-care-medicaid-waiver")
    assert program is not None
    eligible, _ = evaluate(program, command.facts)
    assert eligible


def test_an_age_no_decision_may_hold_is_refused_in_plain_words() -> None:
    """The refusal quoted pydantic: "Input should be less than or equal to 150"."""
    from unittest.mock import MagicMock

    from services.coordination.domain.eligibility import with_age

    command = MagicMock(facts=EligibilityFacts())
    with pytest.raises(InvalidCommand) as refused:
        with_age(command, 151)
    [violation] = refused.value.violations
    assert violation.field == "facts.age"
    assert "must be less than or equal to 150" in violation.problem
    assert "should" not in violation.problem


@pytest.mark.parametrize(("age", "met"), [(70, True), (64, False), (91, False)])
def test_an_age_from_the_record_is_told_without_the_number(age: int, met: bool) -> None:
    """DetermineEligibility's answer tells the reasons about an age the caller did not state
    (the record's) without it; the decision keeps it; an age the caller stated is told."""
    program = Program(program_id="p", name="Waiver", min_age=65, max_age=90)
    decision = decide_eligibility(
        CaseFacts(case_id="case-1", client_id="client-1", needs=()),
        program,
        DetermineEligibility(case_id="case-1", program_id="p", facts=EligibilityFacts(age=age)),
        ON,
    )[0]
    assert isinstance(decision, EligibilityDetermined)
    assert decision.reasons[0].startswith(f"age {age} is ")
    told = reasons_told(decision, None)
    assert len(told) == len(decision.reasons) == 2
    assert all(reason.startswith(RECORDED_AGE) for reason in told)
    assert not any(str(age) in reason for reason in told)
    assert told[0].endswith(("at least" if age >= 65 else "under") + " the minimum of 65")
    assert told[1].endswith(("within" if age <= 90 else "over") + " the maximum of 90")
    assert decision.eligible is met
    assert reasons_told(decision, age) == list(decision.reasons)  # the caller's own age


def test_only_a_reason_about_the_age_decided_on_is_reworded() -> None:
    # A programme without conditions, named like an age reason: its one reason is its name's.
    program = Program(program_id="p", name="age 70 is at least the minimum of 65")
    [decision] = decide_eligibility(
        CaseFacts(case_id="case-1", client_id="client-1", needs=()),
        program,
        DetermineEligibility(case_id="case-1", program_id="p", facts=EligibilityFacts(age=70)),
        ON,
    )
    assert isinstance(decision, EligibilityDetermined)
    assert reasons_told(decision, None) == list(decision.reasons)
