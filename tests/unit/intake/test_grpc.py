"""The intake API through a real grpc.aio channel to the service started by its bootstrap."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.infrastructure import open_event_store
from casetrail_platform.policy.guard import access_stream
from cli.rpc import Person
from events.catalog.access import RecordAccessed
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import Role
from services.intake.adapters import client_directory
from tests.support.grpc import details, refusal, violated_fields
from tests.support.identity import acting
from tests.unit.intake.requests import (
    assessing,
    command,
    get_case,
    granting,
    marco,
    open_case,
    opening,
    query,
    recorded_in_intake,
    until_status,
)
from tests.unit.intake.support import Intake, closed_by_planning, recorded


def query_without_purpose() -> common_pb2.QueryContext:
    return acting(Person("user-coordinator", "coordinator"), common_pb2.QueryContext())


async def test_the_intake_of_a_client(intake: Intake) -> None:
    client = await intake.stub.RegisterClient(marco())
    opened = await intake.stub.OpenCase(opening(client.client_id))
    assessed = await intake.stub.RecordInitialAssessment(assessing(opened.result.case_id))
    assert assessed.result.version == 2
    assert assessed.assessment_id

    record = (
        await intake.stub.GetCase(
            intake_pb2.GetCaseRequest(context=query(), case_id=opened.result.case_id)
        )
    ).record
    assert record.status == "open"
    assert record.client.name.family_name == "Bellini"
    assert record.client.contact.phone == "+39 02 555 0199"
    assert record.referral_source.kind == "hospital"
    assert [n.category for n in record.presenting_needs] == ["home_care"]
    assert record.assessments[0].risks[0].severity == "high"
    assert record.assessments[0].recorded_by.role == "intake_worker"
    assert record.version == 2

    fetched = await intake.stub.GetClient(
        intake_pb2.GetClientRequest(context=query("receptionist"), client_id=client.client_id)
    )
    assert fetched.client.date_of_birth == "1941-06-02"
    assert fetched.client.registered_by.role == "receptionist"


async def test_a_retry_returns_the_first_result(intake: Intake) -> None:
    request = marco()
    first = await intake.stub.RegisterClient(request)
    again = await intake.stub.RegisterClient(request)
    assert again == first
    opened = opening(first.client_id)
    assert await intake.stub.OpenCase(opened) == await intake.stub.OpenCase(opened)


async def test_a_possible_duplicate_is_already_exists_with_the_candidates(
    intake: Intake,
) -> None:
    first = await intake.stub.RegisterClient(marco())
    same_person = marco(given="marco", family="BELLÌNI", national_id="")
    code, status = await refusal(intake.stub.RegisterClient(same_person))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    (duplicates,) = details(status, intake_pb2.PossibleDuplicates)
    assert [c.client_id for c in duplicates.candidates] == [first.client_id]
    assert duplicates.candidates[0].same_name_and_date_of_birth
    resources = details(status, error_details_pb2.ResourceInfo)
    assert [r.resource_name for r in resources] == [first.client_id]
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "POSSIBLE_DUPLICATE_CLIENT"
    # Who the candidate is was disclosed: recorded before the refusal was sent.
    accessed = await recorded_in_intake(intake, access_stream(first.client_id))
    assert [e.event_type for e in accessed] == ["casetrail.record.accessed"]

    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("receptionist"),
            name=same_person.name,
            date_of_birth=same_person.date_of_birth,
        )
    )
    assert [c.client_id for c in found.candidates] == [first.client_id]
    assert not found.truncated

    same_person.confirmed_not_duplicate = True
    registered = await intake.stub.RegisterClient(same_person)
    assert registered.client_id != first.client_id
    assert [c.client_id for c in registered.acknowledged_duplicates] == [first.client_id]


async def three_sharing_one_identifier(intake: Intake) -> list[str]:
    """Three people registered with one identifier (a placeholder typed for an unknown one),
    oldest first: more than a lookup answers once CANDIDATES_PER_KEY is 2."""
    registered: list[str] = []
    for given in ("Anna", "Berta", "Carla"):
        request = marco(given=given, birth=f"19{len(registered) + 50}-01-01")
        request.confirmed_not_duplicate = True
        registered.append((await intake.stub.RegisterClient(request)).client_id)
    return registered


async def test_a_match_key_naming_too_many_answers_the_most_recent_and_says_so(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_directory, "CANDIDATES_PER_KEY", 2)
    registered = await three_sharing_one_identifier(intake)

    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("receptionist"), identifiers=marco().identifiers
        )
    )
    assert found.truncated
    assert [c.client_id for c in found.candidates] == registered[1:]


async def test_a_caller_refused_every_candidate_is_not_told_that_a_key_names_many(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner agency may search (a rule lets it read the clients referred to it) but is
    refused these three: the answer is no match, as for a key naming no one, and each refusal
    is on the record. Before, ``truncated`` told it more clients share the key than a lookup
    answers."""
    monkeypatch.setattr(client_directory, "CANDIDATES_PER_KEY", 2)
    registered = await three_sharing_one_identifier(intake)

    partner = acting(
        Person("user-partner", "partner_agency", agency="westside-food-bank"),
        common_pb2.QueryContext(purpose="coordination"),
    )
    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(context=partner, identifiers=marco().identifiers)
    )
    assert not found.candidates
    assert not found.truncated
    for client_id in registered[1:]:
        recorded = await recorded_in_intake(intake, access_stream(client_id))
        assert [e.event_type for e in recorded] == ["casetrail.record.access_denied"]


async def test_a_possible_duplicate_refusal_carries_no_personal_value_in_its_trailer(
    intake: Intake,
) -> None:
    """Status details travel in a trailer (a header proxies and ingress controllers log): the
    refusal names each candidate by client id and why it matches (schemes, not values), and
    says to look at them with FindPossibleDuplicates; the access recorded names just that.
    Before, the trailer held the candidate's name, date of birth and identifier values."""

    canary_id = "CANARY-ID-93X7"

    def canary() -> intake_pb2.RegisterClientRequest:
        return marco("Ottavina", "Quistellari", "1937-11-23", national_id=canary_id)

    first = await intake.stub.RegisterClient(canary())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await intake.stub.RegisterClient(canary())
    error = raised.value
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    said = [error.details() or "", *(str(v) for _k, v in error.trailing_metadata() or ())]
    for personal in ("Ottavina", "Quistellari", "1937-11-23", canary_id):
        assert not [text for text in said if personal in text], personal
    assert "FindPossibleDuplicates" in (error.details() or "")
    _code, status = await refusal(intake.stub.RegisterClient(canary()))
    (duplicates,) = details(status, intake_pb2.PossibleDuplicates)
    (named,) = duplicates.candidates
    assert named.client_id == first.client_id
    assert named.same_name_and_date_of_birth
    assert list(named.shared_identifier_schemes) == ["national_id"]
    assert not named.date_of_birth
    assert not named.shared_identifiers
    assert not named.HasField("name")
    accessed = await recorded_in_intake(intake, access_stream(first.client_id))
    assert [e.event.fields for e in accessed if isinstance(e.event, RecordAccessed)] == [
        ("client_id", "same_name_and_date_of_birth", "shared_identifier_schemes")
    ] * 2

    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("receptionist"),
            name=canary().name,
            date_of_birth=canary().date_of_birth,
            identifiers=canary().identifiers,
        )
    )
    (shown,) = found.candidates
    assert shown.date_of_birth == "1937-11-23"
    assert list(shown.shared_identifier_schemes) == ["national_id"]
    assert [i.value for i in shown.shared_identifiers] == [canary_id]


async def test_bad_fields_are_invalid_argument_with_field_violations(intake: Intake) -> None:
    # A malformed date is the edge's to refuse, before this check (test_dated_fields_gaps.py).
    request = marco()
    request.contact.email = "nowhere"
    request.name.given_names = ""
    code, status = await refusal(intake.stub.RegisterClient(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(status, error_details_pb2.BadRequest)
    fields = {v.field for v in bad.field_violations}
    assert fields == {"name.given_names", "contact.email"}


async def test_a_c1_control_in_a_name_or_identifier_is_refused_naming_the_field(
    intake: Intake,
) -> None:
    """A C1 control (U+0080-U+009F) shows nothing: "Mar\\u0080co Bellini" registered the same
    person again with no duplicate refusal, and an identifier with one hid the client it names
    from FindPossibleDuplicates too. Refused at the edge, as every other control character."""
    first = await intake.stub.RegisterClient(marco())
    for request, field in (
        (marco(given="Mar\u0080co", national_id=""), "name.given_names"),
        (marco(given="Marko", birth="1941-06-03", national_id="BLLMRC41H02F205X\u0081"),
         "identifiers[0].value"),
    ):  # fmt: skip
        code, status = await refusal(intake.stub.RegisterClient(request))
        assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    found = await intake.stub.FindPossibleDuplicates(
        intake_pb2.FindPossibleDuplicatesRequest(
            context=query("auditor"),
            name=intake_pb2.PersonName(given_names="Marco", family_name="Bellini"),
            date_of_birth="1941-06-02",
        )
    )
    assert [c.client_id for c in found.candidates] == [first.client_id]


async def test_a_missing_idempotency_key_is_invalid_argument(intake: Intake) -> None:
    request = marco()
    request.context.idempotency_key = ""
    code, status = await refusal(intake.stub.RegisterClient(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["context.idempotency_key"]


async def test_a_bad_context_is_reported_with_the_bad_body(intake: Intake) -> None:
    request = marco()
    request.context.idempotency_key = ""
    request.contact.email = "nowhere"
    code, status = await refusal(intake.stub.RegisterClient(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["context.idempotency_key", "contact.email"]

    code, status = await refusal(
        intake.stub.GetClient(intake_pb2.GetClientRequest(context=query_without_purpose()))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["context.purpose", "client_id"]


async def test_a_role_that_may_not_is_permission_denied(intake: Intake) -> None:
    case_id = await open_case(intake)
    code, status = await refusal(
        intake.stub.RecordInitialAssessment(assessing(case_id, role="receptionist"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "ROLE_NOT_ALLOWED"
    code, _ = await refusal(
        intake.stub.GetCase(
            intake_pb2.GetCaseRequest(context=query("receptionist"), case_id=case_id)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_client_and_case_are_not_found(intake: Intake) -> None:
    code, status = await refusal(intake.stub.OpenCase(opening("nobody")))
    assert code == grpc.StatusCode.NOT_FOUND
    (resource,) = details(status, error_details_pb2.ResourceInfo)
    assert resource.resource_name == "nobody"
    code, _ = await refusal(
        intake.stub.GetCase(intake_pb2.GetCaseRequest(context=query(), case_id="nothing"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_a_stale_expected_version_is_aborted(intake: Intake) -> None:
    case_id = await open_case(intake)
    request = assessing(case_id)
    request.context.expected_version = 5
    code, _ = await refusal(intake.stub.RecordInitialAssessment(request))
    assert code == grpc.StatusCode.ABORTED


async def test_a_second_initial_assessment_is_failed_precondition(intake: Intake) -> None:
    case_id = await open_case(intake)
    await intake.stub.RecordInitialAssessment(assessing(case_id))
    code, status = await refusal(intake.stub.RecordInitialAssessment(assessing(case_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "INITIAL_ASSESSMENT_ALREADY_RECORDED"


async def test_reopening_needs_a_closure_from_planning(intake: Intake) -> None:
    case_id = await open_case(intake)
    reopen = intake_pb2.ReopenCaseRequest(
        context=command("coordinator"), case_id=case_id, reason="New fall in January"
    )
    code, status = await refusal(intake.stub.ReopenCase(reopen))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    (failure,) = details(status, error_details_pb2.PreconditionFailure)
    assert failure.violations[0].type == "CASE_NOT_CLOSED"
    assert failure.violations[0].subject == f"case/{case_id}"

    assert intake.infra.inprocess_bus is not None
    await intake.infra.inprocess_bus.publisher(intake.infra.topic).publish(
        [closed_by_planning(case_id, sequence=1)]
    )
    await until_status(intake, case_id, "closed")

    # A supervisor reopens only a case of their team (this one was never assigned).
    code, status = await refusal(
        intake.stub.ReopenCase(
            intake_pb2.ReopenCaseRequest(
                context=command("supervisor"), case_id=case_id, reason="New fall in January"
            )
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "NO_RELATIONSHIP"
    reopened = await intake.stub.ReopenCase(
        intake_pb2.ReopenCaseRequest(
            context=command("coordinator"), case_id=case_id, reason="New fall in January"
        )
    )
    assert reopened.result.version == 2
    record = await get_case(intake, case_id)
    assert record.status == "open"
    assert [r.reason for r in record.reopenings] == ["New fall in January"]
    assert [c.reason for c in record.closures] == ["goals_achieved"]


async def test_commands_dated_out_of_the_case_s_order_are_invalid_argument(intake: Intake) -> None:
    """Audit's state as of a moment is told on the moment each command states: an assessment
    dated before the case was opened, or a reopening dated before the closure it reopens,
    would have it show the case as it never was (the reopened case closed)."""
    case_id = await open_case(intake)
    assessment = assessing(case_id)
    assessment.context.occurred_at.FromDatetime(datetime(1975, 1, 1, tzinfo=UTC))
    code, status = await refusal(intake.stub.RecordInitialAssessment(assessment))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["context.occurred_at"]
    assert "was opened" in status.message

    assert intake.infra.inprocess_bus is not None
    # Stated a few minutes ahead (within the clock skew a command may state), so that the
    # reopening below is after the opening and before the closure.
    closed_at = datetime.now(UTC) + timedelta(minutes=3)
    closure = closed_by_planning(case_id, sequence=1, occurred_at=closed_at)
    await intake.infra.inprocess_bus.publisher(intake.infra.topic).publish([closure])
    await until_status(intake, case_id, "closed")
    reopen = intake_pb2.ReopenCaseRequest(
        context=command("coordinator"), case_id=case_id, reason="New fall in January"
    )
    reopen.context.occurred_at.FromDatetime(closed_at - timedelta(minutes=2))
    code, status = await refusal(intake.stub.ReopenCase(reopen))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["context.occurred_at"]
    assert "was last closed" in status.message
    assert len(await recorded_in_intake(intake, f"case-{case_id}")) == 1
    assert (await get_case(intake, case_id)).status == "closed"


async def test_a_consent_on_a_reopened_case_dated_before_its_closure_is_invalid_argument(
    intake: Intake,
) -> None:
    """As planning refuses a command on a reopened case dated before its last closure: audit's
    state as it happened would show the consent given on the closed case."""
    now = datetime.now(UTC)
    client = await intake.stub.RegisterClient(marco())
    opened = opening(client.client_id)
    opened.context.occurred_at.FromDatetime(now - timedelta(hours=3))
    case_id = (await intake.stub.OpenCase(opened)).result.case_id
    assert intake.infra.inprocess_bus is not None
    closed_at = now - timedelta(hours=1)
    closure = closed_by_planning(case_id, sequence=1, occurred_at=closed_at)
    await intake.infra.inprocess_bus.publisher(intake.infra.topic).publish([closure])
    await until_status(intake, case_id, "closed")
    await intake.stub.ReopenCase(
        intake_pb2.ReopenCaseRequest(
            context=command("coordinator"), case_id=case_id, reason="New fall in January"
        )
    )
    early = granting(case_id)
    early.context.occurred_at.FromDatetime(closed_at - timedelta(minutes=30))
    code, status = await refusal(intake.stub.GrantConsent(early))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(status) == ["context.occurred_at"]
    assert "was closed before its last reopening" in status.message
    assert len(await recorded_in_intake(intake, f"case-{case_id}")) == 2
    await intake.stub.GrantConsent(granting(case_id))


async def test_a_supervisor_s_reopening_retried_after_a_transfer_answers_as_the_first(
    intake: Intake,
) -> None:
    """Team-east's supervisor reopened the case, then it went to team-west: the same request
    retried under its key (its first answer lost) gets the first answer again, not the
    refusal a new reopening of theirs gets (the retry is looked up before the team is
    checked, as coordination's supervisor commands do)."""
    case_id = await open_case(intake)
    bus = intake.infra.inprocess_bus
    assert bus is not None
    publish = bus.publisher(intake.infra.topic).publish
    stream = f"case-{case_id}"
    east = CaseAssigned(
        case_id=case_id,
        worker_id="cm-dana",
        worker_role=Role.CASE_MANAGER,
        worker_team="team-east",
        reason="fits",
    )
    await publish([recorded(east, stream, 1, source="casetrail/coordination")])
    await publish([closed_by_planning(case_id, sequence=1)])
    await until_status(intake, case_id, "closed")

    def by_east(key: str) -> intake_pb2.ReopenCaseRequest:
        supervisor = Person("sup-east", "supervisor", team="team-east")
        context = acting(supervisor, common_pb2.CommandContext(idempotency_key=key))
        return intake_pb2.ReopenCaseRequest(context=context, case_id=case_id, reason="New fall")

    first = await intake.stub.ReopenCase(by_east("reopen-1"))
    west = CaseReassigned(
        case_id=case_id,
        previous_worker_id="cm-dana",
        worker_id="cm-west",
        worker_role=Role.CASE_MANAGER,
        worker_team="team-west",
        reason="moved",
    )
    await publish([recorded(west, stream, 2, source="casetrail/coordination")])

    assert await intake.stub.ReopenCase(by_east("reopen-1")) == first
    code, status = await refusal(intake.stub.ReopenCase(by_east("reopen-2")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"


async def test_queries_need_a_purpose(intake: Intake) -> None:
    code, status = await refusal(
        intake.stub.GetClient(
            intake_pb2.GetClientRequest(
                context=acting(
                    Person("user-coordinator", "coordinator"), common_pb2.QueryContext()
                ),
                client_id="x",
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["context.purpose"]


async def test_a_registered_client_without_a_case_reads_their_own_record(intake: Intake) -> None:
    # The right of access (GDPR Art. 15) holds from registration, before any case is opened.
    client = await intake.stub.RegisterClient(marco())

    def as_client(subject: str) -> intake_pb2.GetClientRequest:
        return intake_pb2.GetClientRequest(
            context=acting(
                Person(subject, "client"), common_pb2.QueryContext(purpose="client_request")
            ),
            client_id=client.client_id,
        )

    own = await intake.stub.GetClient(as_client(client.client_id))
    assert own.client.name.family_name == "Bellini"
    code, status = await refusal(intake.stub.GetClient(as_client("someone-else")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"


async def test_a_refused_list_item_is_the_only_violation_and_erased_is_not_offered(
    intake: Intake,
) -> None:
    client = await intake.stub.RegisterClient(marco())
    request = opening(client.client_id)
    request.presenting_needs[0].category = "astrology"
    code, status = await refusal(intake.stub.OpenCase(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # One item was sent: no "at least 1 item ... not 0" beside the item's own violation.
    assert violated_fields(status) == ["presenting_needs[0].category"]
    [violation] = details(status, error_details_pb2.BadRequest)[0].field_violations
    assert violation.description.endswith("'employment' or 'other'")
    assert "erased" not in violation.description


async def test_many_possible_duplicates_are_refused_with_those_that_fit_and_only_those_recorded(
    intake: Intake,
) -> None:
    """A refusal's details travel in a trailer bounded to a few KiB: with forty people sharing
    an identifier, the refusal names the first that fit, keeps its ErrorInfo, says more exist,
    and records the reads of exactly those it names (before: every detail but the platform's
    ResourceInfo was dropped, POSSIBLE_DUPLICATE_CLIENT with them, while all forty were
    recorded as read)."""
    household: list[str] = []
    for n in range(40):
        member = marco(given=f"Member{n}", national_id="HOUSEHOLD-7")
        member.confirmed_not_duplicate = True
        household.append((await intake.stub.RegisterClient(member)).client_id)
    code, status = await refusal(
        intake.stub.RegisterClient(marco(given="Newcomer", national_id="HOUSEHOLD-7"))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    (info,) = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "POSSIBLE_DUPLICATE_CLIENT"
    (duplicates,) = details(status, intake_pb2.PossibleDuplicates)
    named = [c.client_id for c in duplicates.candidates]
    assert 1 <= len(named) < len(household)
    assert named == household[: len(named)]
    assert info.metadata["candidate_client_ids"] == ",".join(named)
    assert "FindPossibleDuplicates" in status.message
    store, _checkpoints, close = await open_event_store(intake.infra, "intake")
    try:
        everything = await store.read_all(0, 100_000)
    finally:
        await close()
    reads = Counter(r.event.case_id for r in everything if isinstance(r.event, RecordAccessed))
    for index, client_id in enumerate(household):
        # Each member was named to every later member's registration (acknowledged), and to
        # the refused one if it named them.
        acknowledged = len(household) - 1 - index
        assert reads[client_id] == acknowledged + (client_id in named), client_id


async def test_a_malformed_id_is_refused_before_any_decision(intake: Intake) -> None:
    """Ids are checked against the catalog's shape (1-64 of ``[A-Za-z0-9_.:-]``) with the rest
    of the request, before the policy decides (before: a supervisor's queue of a malformed case
    was answered empty, an auditor's GetCase and GetClient NOT_FOUND, and a role refused a
    case's read was answered INVALID_ARGUMENT only because its refusal could not be recorded)."""
    supervisor = acting(
        Person("user-supervisor", "supervisor"), common_pb2.QueryContext(purpose="supervision")
    )
    for bad in ("bad id!", "x" * 65, "a/b"):
        calls = {
            "queue": intake.stub.ListEmergencyAccesses(
                intake_pb2.ListEmergencyAccessesRequest(context=supervisor, case_id=bad)
            ),
            "case": intake.stub.GetCase(intake_pb2.GetCaseRequest(context=query(), case_id=bad)),
            "client": intake.stub.GetClient(
                intake_pb2.GetClientRequest(context=query(), client_id=bad)
            ),
        }
        for what, call in calls.items():
            code, status = await refusal(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (what, bad)
            assert violated_fields(status) == ["client_id" if what == "client" else "case_id"]
            assert bad not in status.message
