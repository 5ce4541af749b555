"""Results and views to responses, and the duplicate refusal's status details."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.grpc_platform.answer_caps import ENTRY_FRAMING, Cap, cut
from casetrail_platform.grpc_platform.errors import ERROR_DOMAIN
from events.catalog.cases import ReferralSource
from events.catalog.clients import PersonalIdentifier, PersonName
from events.envelope import Actor
from services.intake.adapters.case_closures import Closure
from services.intake.app.emergency import QueueItem
from services.intake.app.handlers import Recorded
from services.intake.app.queries import CaseView
from services.intake.domain.cases import Assessment, Reopening
from services.intake.domain.clients import ClientRecord
from services.intake.domain.errors import PossibleDuplicateClient
from services.intake.domain.matching import DuplicateCandidate


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def iso(day: date | None) -> str:
    return day.isoformat() if day else ""


def actor(who: Actor) -> common_pb2.Actor:
    return common_pb2.Actor(user_id=who.user_id, role=who.role.value)


def command_result(recorded: Recorded) -> common_pb2.CommandResult:
    return common_pb2.CommandResult(
        case_id=recorded.subject_id, version=recorded.version, event_ids=recorded.event_ids
    )


def person_name(name: PersonName) -> intake_pb2.PersonName:
    return intake_pb2.PersonName(
        given_names=name.given_names,
        family_name=name.family_name or "",
        preferred_name=name.preferred_name or "",
    )


def identifiers(values: Iterable[PersonalIdentifier]) -> list[intake_pb2.PersonalIdentifier]:
    return [intake_pb2.PersonalIdentifier(scheme=i.scheme, value=i.value) for i in values]


def candidate(found: DuplicateCandidate) -> intake_pb2.DuplicateCandidate:
    return intake_pb2.DuplicateCandidate(
        client_id=found.client_id,
        name=person_name(found.name),
        date_of_birth=iso(found.date_of_birth),
        same_name_and_date_of_birth=found.same_name_and_date_of_birth,
        shared_identifiers=identifiers(found.shared_identifiers),
        shared_identifier_schemes=_schemes(found),
    )


CANDIDATES_BYTES = 3 * 1024 * 1024
"""What the candidates of one answer take at most (``FindPossibleDuplicates``', the
acknowledged duplicates ``RegisterClient`` answers). Each is answered with its name and the
identifiers it shares, up to about 190 KB (100 identifiers of 500 three-byte characters fit
its registration's event): 28 such were past gRPC's 4 MiB, an answer that never reaches the
caller, after every candidate's read was recorded (and a registration's retry is answered the
same)."""


def candidates_fit(found: Sequence[DuplicateCandidate]) -> bool:
    """Whether ``found`` stays within ``CANDIDATES_BYTES`` as an answer lists them."""
    size = sum(candidate(each).ByteSize() + ENTRY_FRAMING for each in found)
    return size <= CANDIDATES_BYTES


def refused_candidate(found: DuplicateCandidate) -> intake_pb2.DuplicateCandidate:
    """A candidate as RegisterClient's refusal names it: status details travel in a trailer,
    a header proxies and ingress controllers log, so no name, date of birth or identifier value
    (sealed under the client's key), only what tells the caller which client to look at with
    ``FindPossibleDuplicates`` and why."""
    return intake_pb2.DuplicateCandidate(
        client_id=found.client_id,
        same_name_and_date_of_birth=found.same_name_and_date_of_birth,
        shared_identifier_schemes=_schemes(found),
    )


def _schemes(found: DuplicateCandidate) -> list[str]:
    return [identifier.scheme for identifier in found.shared_identifiers]


def client(record: ClientRecord) -> intake_pb2.Client:
    registration = record.registration
    message = intake_pb2.Client(
        client_id=registration.client_id,
        name=person_name(registration.name),
        date_of_birth=iso(registration.date_of_birth),
        identifiers=identifiers(registration.identifiers),
        preferred_language=registration.preferred_language or "",
        registered_at=timestamp(record.registered.occurred_at),
        registered_by=actor(record.registered.actor),
        version=record.version,
    )
    if registration.contact is not None:
        message.contact.CopyFrom(
            intake_pb2.ContactDetails(
                phone=registration.contact.phone or "",
                email=registration.contact.email or "",
                postal_address=registration.contact.postal_address or "",
            )
        )
    return message


def case_record(view: CaseView) -> intake_pb2.CaseRecord:
    case = view.case
    message = intake_pb2.CaseRecord(
        case_id=case.case_id,
        referral_source=referral_source(case.opened.referral_source),
        presenting_needs=[
            intake_pb2.PresentingNeed(
                category=need.category.value, description=need.description or ""
            )
            for need in case.opened.presenting_needs
        ],
        assessments=[assessment(item) for item in case.assessments],
        status=view.status,
        opened_at=timestamp(case.opened_by.occurred_at),
        opened_by=actor(case.opened_by.actor),
        closures=[closure(item) for item in view.closures],
        reopenings=[reopening(item) for item in case.reopenings],
        version=case.version,
    )
    if view.client is not None:
        message.client.CopyFrom(client(view.client))
    cut_case_record(message)
    return message


CASE_ASSESSMENTS = Cap(100, 1536 * 1024)
CASE_REOPENINGS = Cap(100, 768 * 1024)
CASE_CLOSURES = Cap(1000, 128 * 1024)
"""What a case record lists at most of its assessments, reopenings and closures, one more each
time the case is closed and reopened: an assessment takes up to the store's 256 KiB, a
reopening's reason 80 KB (20,000 four-byte characters), a closure about 40 bytes. With the
client's record and the case's opening (each an event, at most 256 KiB) the answer stays under
3 MiB, below gRPC's 4 MiB, which never reaches the caller."""


def cut_case_record(message: intake_pb2.CaseRecord) -> None:
    """Keep in ``message`` the latest assessments, reopenings and closures within their caps,
    still oldest first, with ``*_truncated`` and ``*_total``."""
    message.assessments_truncated, message.assessments_total = cut(
        message.assessments, CASE_ASSESSMENTS, _latest_first
    )
    message.reopenings_truncated, message.reopenings_total = cut(
        message.reopenings, CASE_REOPENINGS, _latest_first
    )
    message.closures_truncated, message.closures_total = cut(
        message.closures, CASE_CLOSURES, _latest_first
    )


def _latest_first(index: int, _: Message) -> tuple[int]:
    return (-index,)


def referral_source(source: ReferralSource) -> intake_pb2.ReferralSource:
    return intake_pb2.ReferralSource(kind=source.kind.value, name=source.name or "")


def assessment(item: Assessment) -> intake_pb2.InitialAssessment:
    event = item.event
    factors = event.factors
    return intake_pb2.InitialAssessment(
        assessment_id=event.assessment_id,
        factors=intake_pb2.AssessmentFactors(
            psychosocial=factors.psychosocial or "",
            biological=factors.biological or "",
            psychological=factors.psychological or "",
            cultural=factors.cultural or "",
            social=factors.social or "",
            economic=factors.economic or "",
        ),
        strengths=event.strengths,
        resources=event.resources,
        risks=[
            intake_pb2.Risk(description=risk.description, severity=risk.severity.value)
            for risk in event.risks
        ],
        needs=[
            intake_pb2.AssessedNeed(
                category=need.category.value,
                urgency=need.urgency.value,
                description=need.description or "",
            )
            for need in event.needs
        ],
        recorded_at=timestamp(item.recorded.occurred_at),
        recorded_by=actor(item.recorded.actor),
    )


def reopening(item: Reopening) -> intake_pb2.Reopening:
    return intake_pb2.Reopening(
        reason=item.event.reason,
        reopened_at=timestamp(item.recorded.occurred_at),
        reopened_by=actor(item.recorded.actor),
    )


def closure(item: Closure) -> intake_pb2.Closure:
    return intake_pb2.Closure(reason=item.reason, closed_at=timestamp(item.closed_at))


def duplicate_details(error: PossibleDuplicateClient) -> tuple[Message, ...]:
    """What the platform's ALREADY_EXISTS status (a ResourceInfo naming the first candidate)
    lacks: an ErrorInfo, our PossibleDuplicates message with every candidate (without personal
    values: ``refused_candidate``), and a ResourceInfo for each other candidate. The ErrorInfo
    comes first: a status too big for its trailer loses its last details first
    (``grpc_platform.errors.bounded``)."""
    return (
        error_details_pb2.ErrorInfo(
            reason="POSSIBLE_DUPLICATE_CLIENT",
            domain=ERROR_DOMAIN,
            metadata={"candidate_client_ids": ",".join(c.client_id for c in error.candidates)},
        ),
        intake_pb2.PossibleDuplicates(candidates=[refused_candidate(c) for c in error.candidates]),
        *(
            error_details_pb2.ResourceInfo(
                resource_type="client", resource_name=c.client_id, description=_why(c)
            )
            for c in error.candidates[1:]
        ),
    )


def _why(found: DuplicateCandidate) -> str:
    reasons = []
    if found.same_name_and_date_of_birth:
        reasons.append("same name and date of birth")
    reasons += [f"same {i.scheme} identifier" for i in found.shared_identifiers]
    return "; ".join(reasons)


def emergency_access(item: QueueItem) -> intake_pb2.EmergencyAccess:
    entry = item.entry
    message = intake_pb2.EmergencyAccess(
        emergency_access_id=entry.emergency_access_id,
        case_id=entry.case_id,
        grantee=common_pb2.Actor(user_id=entry.grantee_id, role=entry.grantee_role),
        grantee_agency_id=entry.grantee_agency_id,
        grantee_team=entry.grantee_team or "",
        reason=entry.reason,
        opened_at=timestamp(entry.opened_at),
        expires_at=timestamp(entry.expires_at),
        review_due_at=timestamp(item.review_due_at),
        overdue=item.overdue,
        closed_at=None if entry.closed_at is None else timestamp(entry.closed_at),
    )
    if entry.review is not None:
        review = entry.review
        message.review.CopyFrom(
            intake_pb2.EmergencyAccessReview(
                reviewer=common_pb2.Actor(user_id=review.reviewer_id, role=review.reviewer_role),
                outcome=review.outcome,
                note=review.note or "",
                reviewed_at=timestamp(review.reviewed_at),
            )
        )
    return message
