"""Programme eligibility: every rule of the programme is checked and its outcome, met or not,
is recorded as a reason, so the decision can be explained and reviewed."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import cache

from pydantic import ValidationError

from casetrail_platform.commands import InvalidCommand
from events.catalog.base import CaseEvent
from events.catalog.clients import PersonalText
from events.catalog.eligibility import EligibilityDetermined, EligibilityFacts
from events.catalog.values import in_major_units
from events.errors import FieldProblem
from events.validation import plain, text_lengths
from services.coordination.domain import errors
from services.coordination.domain.agency import Program
from services.coordination.domain.commands import DetermineEligibility
from services.coordination.domain.facts import CaseFacts, check_new_work


def evaluate(program: Program, facts: EligibilityFacts) -> tuple[bool, list[str]]:
    """(eligible, one reason per rule). Facts a rule needs but that are missing are refused."""
    _require_facts(program, facts)
    return _outcomes(program, facts)


def _outcomes(program: Program, facts: EligibilityFacts) -> tuple[bool, list[str]]:
    """``evaluate``'s, of the rules whose facts are given (an age not known yet: none)."""
    outcomes: list[tuple[bool, str]] = []
    age = facts.age
    # Worded as _AGE_REASON reads them back (``reasons_told``).
    if program.min_age is not None and age is not None:
        met = age >= program.min_age
        outcomes.append(
            (met, f"age {age} is {'at least' if met else 'under'} the minimum of {program.min_age}")
        )
    if program.max_age is not None and age is not None:
        met = age <= program.max_age
        outcomes.append(
            (met, f"age {age} is {'within' if met else 'over'} the maximum of {program.max_age}")
        )
    limit = program.max_monthly_income
    if limit is not None and facts.monthly_income is not None:
        income = facts.monthly_income
        met = income.amount_minor_units <= limit.amount_minor_units
        outcomes.append(
            (
                met,
                f"monthly income {in_major_units(income)} is "
                f"{'within' if met else 'over'} the limit of {in_major_units(limit)}",
            )
        )
    if program.residence_in and facts.residence is not None:
        outcomes.append(_residence_outcome(program, facts.residence))
    if not outcomes:
        # The programme's name (500 characters) may not fit in a reason beside the words.
        named = f"{program.name} has no eligibility conditions"
        fits = len(named) <= _longest_reason()
        outcomes.append((True, named if fits else "the programme has no eligibility conditions"))
    return all(met for met, _ in outcomes), [reason for _, reason in outcomes]


@cache
def _longest_reason() -> int:
    """The characters each reason the decision records may hold (its ``PersonalText``)."""
    lengths = text_lengths(PersonalText)
    assert lengths is not None  # a bounded text
    return lengths[1]


def _residence_outcome(program: Program, residence: str) -> tuple[bool, str]:
    """Whether ``residence`` is in the programme's area, and the reason saying so: the area
    listed when the reason has room for it, else counted. A residence the reason cannot hold
    is refused naming it; as the event's refusal it named ``reasons.N``, which nobody sent."""
    met = residence in program.residence_in
    said = f"residence {residence} is {'in' if met else 'outside'} the programme's area"
    count = len(program.residence_in)
    forms = (
        f"{said} ({', '.join(program.residence_in)})",
        f"{said} ({count} jurisdiction{'' if count == 1 else 's'})",
    )
    longest = _longest_reason()
    fitting = [reason for reason in forms if len(reason) <= longest]
    if fitting:
        return met, fitting[0]
    room = longest - (min(map(len, forms)) - len(residence))
    raise InvalidCommand(
        [
            FieldProblem(
                "facts.residence",
                f"at most {room} characters for programme {program.program_id}: the"
                " decision's reason quotes it",
            )
        ]
    )


def decide_eligibility(
    facts: CaseFacts,
    program: Program,
    command: DetermineEligibility,
    on: date,
    occurred_at: datetime | None = None,
    recorded_age: int | None = None,
) -> list[CaseEvent]:
    """``occurred_at``: the command's moment (stated, else now), checked as new work's
    (``check_new_work``). ``recorded_age``: the client's age on ``on`` by the date of birth
    intake recorded (``None``: coordination knows none), which the decision rests on.

    The stated age is compared with the record's last, once every other check has passed
    (the case, the moment, each fact the programme needs, the decision as recorded): refused
    for anything else first, a caller sending one age after another would learn the record's
    from the one refused otherwise. So whatever age is stated, the decision is recorded, or
    refused ``AGE_CONTRADICTS_DATE_OF_BIRTH``, which the handler records as a read of the
    case. ``CLIENT_AGE_NOT_KNOWN`` (no age stated nor recorded) is refused last too."""
    check_new_work(facts, occurred_at)
    decided = command if recorded_age is None else with_age(command, recorded_age)
    problems = missing_facts(program, decided.facts)
    # Only the age missing, and it would come from intake's date of birth.
    age_not_known = [problem.field for problem in problems] == ["facts.age"]
    if problems and not age_not_known:
        raise InvalidCommand(problems)
    eligible, reasons = _outcomes(program, decided.facts)
    valid_until = (
        on + timedelta(days=program.valid_for_days)
        if eligible and program.valid_for_days is not None
        else None
    )
    decision = EligibilityDetermined(
        case_id=facts.case_id,
        program_id=program.program_id,
        program_name=program.name,
        eligible=eligible,
        reasons=tuple(reasons),
        facts=decided.facts,
        valid_until=valid_until,
    )
    if age_not_known:
        raise errors.client_age_not_known(facts.case_id, program.program_id)
    stated_age = command.facts.age
    if recorded_age is not None and stated_age is not None and stated_age != recorded_age:
        # Refused rather than used (a state resource would rest on an age the client's record
        # contradicts) or silently replaced (the caller would believe the decision rests on
        # it, and the discrepancy would go unnoticed).
        raise errors.age_contradicts_date_of_birth(facts.case_id, program.program_id)
    return [decision]


_AGE_REASON = re.compile(
    r"age (?P<age>[0-9]+) (?P<rule>is (?:at least|under) the minimum of [0-9]+"
    r"|is (?:within|over) the maximum of [0-9]+)"
)
"""A reason about the age as ``evaluate`` words it."""

RECORDED_AGE = "the client's age by their recorded date of birth"
"""The age's place in a reason told to the caller when the age was the record's."""


def reasons_told(decision: EligibilityDetermined, stated_age: int | None) -> list[str]:
    """The reasons of ``decision`` as its command's answer tells them. An age the caller did
    not state (``stated_age``) came from the client's recorded date of birth: client data,
    and a command's answer records no access (as ScheduleService leaves the client's id out,
    and AGE_CONTRADICTS_DATE_OF_BIRTH tells neither age), so its reasons say whether the age
    meets each rule without the number. The decision keeps the number (it rests on it, and is
    reviewed on it); reads of the case show it, recorded."""
    age = decision.facts.age
    if stated_age is not None or age is None:
        return list(decision.reasons)
    told = []
    for reason in decision.reasons:
        about_age = _AGE_REASON.fullmatch(reason)
        if about_age is not None and int(about_age["age"]) == age:
            reason = f"{RECORDED_AGE} {about_age['rule']}"
        told.append(reason)
    return told


def with_age(command: DetermineEligibility, age: int) -> DetermineEligibility:
    """``command`` with the client's ``age`` from intake's date of birth, checked as the event
    will hold it (``model_copy`` would skip the check and store an age no reader accepts)."""
    try:
        facts = EligibilityFacts.model_validate({**command.facts.model_dump(), "age": age})
    except ValidationError as error:
        # The age itself is not repeated: it is derived from personal data.
        problems = "; ".join(plain(detail) for detail in error.errors())
        raise InvalidCommand(
            [
                FieldProblem(
                    "facts.age",
                    "the age from the client's recorded date of birth is not one an eligibility"
                    f" decision may hold ({problems}); if the recorded date of birth is wrong,"
                    " correct it with intake's CorrectClientDateOfBirth",
                )
            ]
        ) from None
    return DetermineEligibility.model_validate({**command.model_dump(), "facts": facts})


def _require_facts(program: Program, facts: EligibilityFacts) -> None:
    problems = missing_facts(program, facts)
    if problems:
        raise InvalidCommand(problems)


def missing_facts(program: Program, facts: EligibilityFacts) -> list[FieldProblem]:
    """The facts ``program``'s rules need that ``facts`` lacks (or gives in a wrong currency)."""
    problems = []
    if (program.min_age is not None or program.max_age is not None) and facts.age is None:
        problems.append(_needed("facts.age", program, "an age condition"))
    limit = program.max_monthly_income
    if limit is not None:
        income = facts.monthly_income
        if income is None:
            problems.append(_needed("facts.monthly_income", program, "an income limit"))
        elif income.currency != limit.currency:
            problems.append(
                FieldProblem(
                    "facts.monthly_income.currency",
                    f"must be {limit.currency}, the currency of {program.program_id}'s limit",
                )
            )
    if program.residence_in and facts.residence is None:
        problems.append(_needed("facts.residence", program, "a residence condition"))
    return problems


def _needed(field: str, program: Program, what: str) -> FieldProblem:
    return FieldProblem(field, f"required: programme {program.program_id} has {what}")


def describe_rules(program: Program) -> list[str]:
    """The programme's rules in words, for people choosing where to apply."""
    rules = []
    if program.min_age is not None:
        rules.append(f"age at least {program.min_age}")
    if program.max_age is not None:
        rules.append(f"age at most {program.max_age}")
    if program.max_monthly_income is not None:
        rules.append(f"monthly income at most {in_major_units(program.max_monthly_income)}")
    if program.residence_in:
        rules.append(f"residence in {', '.join(program.residence_in)}")
    return rules
