"""Coordination's refusals: the platform's kinds, with the rule names coordination uses.

Each constructor gives the details a caller needs to act on the refusal (the conflicting
appointment, what is left on a budget line, the referral to make instead...).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from casetrail_platform.commands import RuleBroken
from casetrail_platform.policy.redaction import is_sensitive_code
from events.catalog.assignment import COUNSELING_LICENCES
from events.catalog.values import Money

CASE_CLOSED = "CASE_CLOSED"
CASE_ALREADY_ASSIGNED = "CASE_ALREADY_ASSIGNED"
CASE_NOT_ASSIGNED = "CASE_NOT_ASSIGNED"
ALREADY_ASSIGNED_TO_WORKER = "ALREADY_ASSIGNED_TO_WORKER"
WORKER_DOES_NOT_CARRY_CASES = "WORKER_DOES_NOT_CARRY_CASES"
COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER = "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER"
WORKER_LACKS_REQUIRED_CREDENTIAL = "WORKER_LACKS_REQUIRED_CREDENTIAL"
CASELOAD_FULL = "CASELOAD_FULL"
REFERRAL_PROVIDER_MISMATCH = "REFERRAL_PROVIDER_MISMATCH"
REFERRAL_NOT_PENDING = "REFERRAL_NOT_PENDING"
REFERRAL_NOT_ACCEPTED = "REFERRAL_NOT_ACCEPTED"
REFERRAL_NOT_USABLE = "REFERRAL_NOT_USABLE"
REFERRAL_NOT_RUNNING = "REFERRAL_NOT_RUNNING"
SCHEDULE_CONFLICT = "SCHEDULE_CONFLICT"
SERVICE_NOT_SCHEDULED = "SERVICE_NOT_SCHEDULED"
SERVICE_CANCELLED = "SERVICE_CANCELLED"
SERVICE_ALREADY_CLAIMED = "SERVICE_ALREADY_CLAIMED"
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
BUDGET_LINE_DOES_NOT_FUND_SERVICE = "BUDGET_LINE_DOES_NOT_FUND_SERVICE"
RESERVATION_ALREADY_RELEASED = "RESERVATION_ALREADY_RELEASED"
TOO_MANY_RESERVATIONS = "TOO_MANY_RESERVATIONS"
RELEASE_EXCEEDS_RESERVATION = "RELEASE_EXCEEDS_RESERVATION"
CLAIM_ALREADY_DECIDED = "CLAIM_ALREADY_DECIDED"
CLIENT_AGE_NOT_KNOWN = "CLIENT_AGE_NOT_KNOWN"
AGE_CONTRADICTS_DATE_OF_BIRTH = "AGE_CONTRADICTS_DATE_OF_BIRTH"
INSURER_MISMATCH = "INSURER_MISMATCH"
APPROVED_AMOUNT_EXCEEDS_CLAIM = "APPROVED_AMOUNT_EXCEEDS_CLAIM"
SERVICE_NOT_YET_DELIVERABLE = "SERVICE_NOT_YET_DELIVERABLE"
SERVICE_NOT_DELIVERED = "SERVICE_NOT_DELIVERED"

COUNSELING_PROVIDERS = (
    "a counseling provider: a licensed counselor or clinical social worker (LCSW),"
    " or an addiction counselor"
)
"""Who a case manager refers the client to instead of counseling them (they may not counsel).
One text for every counseling need, so that the refusal does not tell which need it is."""


class AgeContradictsDateOfBirth(RuleBroken):
    """``AGE_CONTRADICTS_DATE_OF_BIRTH``: telling the caller that the age they stated is not
    the client's recorded one tells them of the client's record, so the refusal is recorded as
    a read of the case before it is answered (``handlers.funding.determine_eligibility``)."""


def client_age_not_known(case_id: str, program_id: str) -> RuleBroken:
    # Not the caller's mistake (INVALID_ARGUMENT): the date of birth may be on its way from
    # intake on another partition, or was never recorded. Retrying later, or giving the age,
    # both resolve it. Worded by the case the caller named: the client's id is client data,
    # answered by reads that record it.
    return RuleBroken(
        CLIENT_AGE_NOT_KNOWN,
        f"{program_id} has an age condition and coordination does not know the age of case"
        f" {case_id}'s client: it has not arrived from intake yet (retry shortly), or intake"
        " has none (give facts.age, or record it with intake's CorrectClientDateOfBirth)",
        subject=f"case/{case_id}",
        program_id=program_id,
    )


def age_contradicts_date_of_birth(case_id: str, program_id: str) -> AgeContradictsDateOfBirth:
    # Not INVALID_ARGUMENT: the age stated is a valid one, refused because of what intake
    # recorded (the same request passes once the record says so). Neither age nor the date of
    # birth is repeated: they are the client's personal data, and refusals reach logs. Nor is
    # the client's id: worded by the case the caller named, as ``client_age_not_known``.
    return AgeContradictsDateOfBirth(
        AGE_CONTRADICTS_DATE_OF_BIRTH,
        f"facts.age is not case {case_id}'s client's age by the date of birth intake recorded;"
        f" {program_id}'s eligibility rests on the record: leave facts.age out, or correct a"
        " wrong date of birth with intake's CorrectClientDateOfBirth",
        subject=f"case/{case_id}",
        field="facts.age",
        program_id=program_id,
        suggested_action="CorrectClientDateOfBirth",
    )


def case_closed(
    case_id: str, after: datetime | None = None, reopened_at: datetime | None = None
) -> RuleBroken:
    """``after``: the closure's moment, when what is refused is something that would have
    happened after it (a delivery, say); wrap-up of what happened before stays allowed.
    ``reopened_at``: the reopening that ended that closure, when what is refused would have
    happened while the case was closed then (a service's start)."""
    if after is None:
        return RuleBroken(
            CASE_CLOSED,
            f"case {case_id} is closed; it must be reopened at intake first",
            subject=f"case/{case_id}",
        )
    if reopened_at is not None:
        return RuleBroken(
            CASE_CLOSED,
            f"case {case_id} was closed from {after.isoformat()} until it was reopened at"
            f" {reopened_at.isoformat()}; nothing can have taken place on it in between",
            subject=f"case/{case_id}",
            closed_at=after.isoformat(),
            reopened_at=reopened_at.isoformat(),
        )
    return RuleBroken(
        CASE_CLOSED,
        f"case {case_id} was closed at {after.isoformat()}; only what happened before the"
        " closure can still be recorded, anything later needs the case reopened at intake",
        subject=f"case/{case_id}",
        closed_at=after.isoformat(),
    )


def counseling_requires_licence(case_id: str, worker_id: str, worker_role: str) -> RuleBroken:
    # Names the rule and the worker, never the needs nor how many: the refusal goes to whoever
    # asked (a coordinator may not see substance use or mental health, and is shown the other
    # needs: a count would tell how many are withheld), and texts like this one end up in
    # SuggestWorkers' reasons. Those entitled read the needs from GetCaseCoordination.
    return RuleBroken(
        COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER,
        f"case {case_id} has open needs calling for counseling,"
        f" which only a licensed social worker ({', '.join(COUNSELING_LICENCES)}) may take on;"
        f" worker {worker_id} ({worker_role}) may not counsel. Assign a licensed social worker,"
        f" or refer the client ({COUNSELING_PROVIDERS}) with MakeReferral and assign {worker_id}"
        " for the other needs",
        subject=f"worker/{worker_id}",
        worker_id=worker_id,
        worker_role=worker_role,
        required_licences=",".join(COUNSELING_LICENCES),
        suggested_referrals=COUNSELING_PROVIDERS,
        suggested_action="MakeReferral",
    )


def credential_required(case_id: str, worker_id: str, worker_role: str) -> RuleBroken:
    """``counseling_requires_licence`` as told to a reader shown no need calling for
    counseling (``assignment.fit_refusals``): those that do and are special data (mental
    health, substance use) are withheld from them, and ``counseling`` itself is none, so a
    refusal saying the case calls for counseling would tell them the case has one of the
    others. It says the worker lacks a credential the case's needs require, in the same words
    whichever need it is, and names no licence (only counseling asks for one): the reader
    assigns one of the workers SuggestWorkers shows fitting, and leaves referring the need out
    to those who see it (the case's worker, their supervisor)."""
    return RuleBroken(
        WORKER_LACKS_REQUIRED_CREDENTIAL,
        f"worker {worker_id} ({worker_role}) lacks a credential that case {case_id}'s open needs"
        " require; assign one of the workers SuggestWorkers shows fitting the case",
        subject=f"worker/{worker_id}",
        worker_id=worker_id,
        worker_role=worker_role,
        suggested_action="SuggestWorkers",
    )


def withdrawal_leaves_counseling(
    case_id: str, referral_id: str, worker_id: str, worker_role: str
) -> RuleBroken:
    """``counseling_requires_licence`` for a withdrawal: the referral is all that keeps needs
    calling for counseling off a worker who may not counsel. Said in the same words (the rule,
    the worker; never which need, nor how many)."""
    return RuleBroken(
        COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER,
        f"withdrawing referral {referral_id} would leave case {case_id}'s open needs calling for"
        f" counseling with worker {worker_id} ({worker_role}), who may not counsel: only a"
        f" licensed social worker ({', '.join(COUNSELING_LICENCES)}) may take them on. Transfer"
        " the case to a licensed social worker with TransferCase first, or refer the client"
        f" anew ({COUNSELING_PROVIDERS}) with MakeReferral and withdraw {referral_id} once the"
        " new referral is accepted",
        subject=f"referral/{referral_id}",
        worker_id=worker_id,
        worker_role=worker_role,
        required_licences=",".join(COUNSELING_LICENCES),
        suggested_referrals=COUNSELING_PROVIDERS,
        suggested_action="TransferCase",
    )


def withdrawal_lacks_credential(
    case_id: str, referral_id: str, worker_id: str, worker_role: str
) -> RuleBroken:
    """``withdrawal_leaves_counseling`` as told to a caller shown no need calling for
    counseling (a coordinator withdrawing a referral of a need withheld from them), in the
    words of ``credential_required``: the same whichever need, naming no licence nor
    counseling provider, either of which would tell them the referral's need calls for
    counseling."""
    return RuleBroken(
        WORKER_LACKS_REQUIRED_CREDENTIAL,
        f"withdrawing referral {referral_id} would leave case {case_id}'s open needs with worker"
        f" {worker_id} ({worker_role}), who lacks a credential they require. Transfer the case"
        " with TransferCase to a worker who holds it first",
        subject=f"referral/{referral_id}",
        worker_id=worker_id,
        worker_role=worker_role,
        suggested_action="TransferCase",
    )


def caseload_full(worker_id: str, caseload: int, capacity: int) -> RuleBroken:
    return RuleBroken(
        CASELOAD_FULL,
        f"worker {worker_id} already carries {caseload} open cases (capacity {capacity})",
        subject=f"worker/{worker_id}",
        worker_id=worker_id,
        caseload=str(caseload),
        capacity=str(capacity),
    )


def worker_does_not_carry_cases(worker_id: str, role: str) -> RuleBroken:
    return RuleBroken(
        WORKER_DOES_NOT_CARRY_CASES,
        f"worker {worker_id} is a {role}; only case managers and social workers carry cases",
        subject=f"worker/{worker_id}",
        worker_id=worker_id,
        worker_role=role,
    )


def schedule_conflict(
    case_id: str,
    kind: str,
    starts_at: datetime,
    ends_at: datetime,
    other_id: str,
    other_case_id: str,
    other_kind: str,
    other_starts_at: datetime,
    other_ends_at: datetime,
    *,
    shown: bool,
) -> RuleBroken:
    """The slot of the command on ``case_id`` overlaps another service of the client's.

    ``shown``: whether the caller's own ``GetClientSchedule`` lists that service
    (``ScheduleShown``). If not, the refusal tells no more than that the slot overlaps one
    (which no answer can leave out: the booking is refused), not the slot it holds: a time
    their schedule lists nothing at could only be a service withheld from them, an
    addiction-counseling one for a reader not entitled to sensitive values.

    One of the same case is named (its id, kind and times): the caller was let act on the case.
    One of the client's other cases is told as the slot it holds only, enough to choose another
    time: a refusal is no read the access policy decided and recorded, so neither its case, its
    service nor its kind is named (whoever may read it finds it in GetClientSchedule). A service
    of the same case whose kind is special data (``addiction_counseling``, which not everyone on
    the case may see) is told in those same words, to a caller shown it: named, or told apart,
    it would say its kind in the refusal's text, which reaches logs and proxies."""
    asked = f"{_kind_named(kind)} from {starts_at.isoformat()} to {ends_at.isoformat()}"
    if not shown:
        return RuleBroken(
            SCHEDULE_CONFLICT,
            f"{asked} overlaps another of the client's services, one you are not shown; the"
            " client cannot attend both, choose another time",
            subject=f"case/{case_id}",
        )
    slot = {
        "conflicting_starts_at": other_starts_at.isoformat(),
        "conflicting_ends_at": other_ends_at.isoformat(),
    }
    held = f"from {other_starts_at.isoformat()} to {other_ends_at.isoformat()}"
    if other_case_id != case_id or is_sensitive_code(other_kind):
        return RuleBroken(
            SCHEDULE_CONFLICT,
            f"{asked} overlaps another of the client's services, {held}; the client cannot"
            " attend both, choose another time",
            subject=f"case/{case_id}",
            **slot,
        )
    return RuleBroken(
        SCHEDULE_CONFLICT,
        f"{asked} overlaps {other_kind} service {other_id} of the case {held}; the client cannot"
        " attend both, choose another time",
        subject=f"service/{other_id}",
        conflicting_service_id=other_id,
        conflicting_case_id=other_case_id,
        conflicting_kind=other_kind,
        **slot,
    )


def schedule_conflict_withheld(kind: str, starts_at: datetime, ends_at: datetime) -> RuleBroken:
    """``schedule_conflict`` for a caller who may not learn of the client's other services (a
    partner agency recording a delivery): the rule and the caller's own slot only."""
    return RuleBroken(
        SCHEDULE_CONFLICT,
        f"{_kind_named(kind)} from {starts_at.isoformat()} to {ends_at.isoformat()} overlaps"
        " another of the client's services; the client cannot have attended both: check the"
        " times, or ask the agency",
    )


def _kind_named(kind: str) -> str:
    """The kind a command is about as a refusal names it: a special-data one
    (``addiction_counseling``) as "the service", for the refusal's text reaches callers' logs
    and proxies, where no sensitive value may go, and the caller knows what it asked."""
    return "the service" if is_sensitive_code(kind) else kind


def budget_line_does_not_fund_service(
    budget_line: str, funds: Sequence[str], service_id: str | None
) -> RuleBroken:
    """A reservation for service ``service_id`` (``None``: naming no service) on a line paying
    only for ``funds`` (the agency's configuration, as ``GetBudgetLine`` answers it). The
    service's kind is never named: the caller sent its id, not its kind, and a kind named
    only when not special-data ("home_care", else "the service") would tell which it is."""
    kinds = ", ".join(funds)
    what = "a service without a service_id" if service_id is None else f"service {service_id}"
    return RuleBroken(
        BUDGET_LINE_DOES_NOT_FUND_SERVICE,
        f"budget line {budget_line} pays only for {kinds}, not {what}",
        subject=f"budget_line/{budget_line}",
        budget_line=budget_line,
        funds_service_kinds=kinds,
    )


def budget_exceeded(budget_line: str, requested: Money, available: int) -> RuleBroken:
    return RuleBroken(
        BUDGET_EXCEEDED,
        f"budget line {budget_line} has {available} {requested.currency} (minor units) left; "
        f"{requested.amount_minor_units} were requested",
        subject=f"budget_line/{budget_line}",
        budget_line=budget_line,
        requested=str(requested.amount_minor_units),
        available=str(available),
        currency=requested.currency,
    )


def too_many_reservations(
    budget_line: str, case_id: str, service_id: str | None, limit: int
) -> RuleBroken:
    what, subject = (
        ("case " + case_id + " naming no service", f"case/{case_id}")
        if service_id is None
        else ("service " + service_id, f"service/{service_id}")
    )
    return RuleBroken(
        TOO_MANY_RESERVATIONS,
        f"budget line {budget_line} already holds {limit} reservations for {what}, the most it"
        f" may (released ones count); reserve on another line or for another service",
        subject=subject,
        budget_line=budget_line,
        limit=str(limit),
    )


CONSENT_REQUIRED = "CONSENT_REQUIRED"


def consent_required(case_id: str, provider_id: str, reason: str) -> RuleBroken:
    """42 CFR Part 2 / GDPR: the client's consent must name the recipient, the purpose and
    what is disclosed; the refusal names the consent that is missing. The need's category is
    named by its request field (``category_field``), never by its value: a sensitive one
    (``substance_use``) is special data, and the refusal's text and details reach callers' logs
    and proxies; said alike for every need, so it tells nothing of which it was."""
    return RuleBroken(
        CONSENT_REQUIRED,
        f"referring case {case_id} to {provider_id} discloses it: {reason}; the consent must"
        " also name the need's category when need_category is a sensitive one",
        subject=f"case/{case_id}",
        recipient=provider_id,
        purpose="coordination",
        scope="referrals",
        category_field="need_category",
    )


def service_consent_required(case_id: str, referral_id: str, provider_id: str) -> RuleBroken:
    """``consent_required`` for a service booked from a referral whose kind tells of a sensitive
    category (``addiction_counseling``: substance use) that is not the need referred and that
    the consent the referral was made under does not name (in force): the referral's provider
    reads the services of its referral, so the kind discloses the category as the need would.
    The kind is named by its request field (``category_field``), never by its value, and the
    refusal is said alike for every such kind."""
    return RuleBroken(
        CONSENT_REQUIRED,
        f"booking this service from referral {referral_id} discloses it to {provider_id}: its"
        " kind tells of a sensitive category, which is not the need referred and which the"
        " consent the referral was made under does not name; refer that need under a consent"
        " naming its category",
        subject=f"case/{case_id}",
        recipient=provider_id,
        purpose="coordination",
        scope="services",
        category_field="kind",
    )
