"""Break the glass through the gRPC APIs: an entitled caller opens a time-boxed emergency access
(recorded before anything is disclosed), reads the case in every service for purpose
emergency inside the window, is refused and recorded after it, and supervisors review it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from cli.rpc import Person, Refusal, command, eventually, query, refusal_of, refused
from cli.walk.story import AUDITOR, COORDINATOR
from tests.e2e.conftest import Casetrail
from tests.e2e.support import BREAK_GLASS, ON_CALL, REASON, Case, casetrail_cli, new_case, opening
from tests.support.cases import key

pytestmark = pytest.mark.asyncio(loop_scope="package")

ON_CALL_UNENTITLED = Person("sw-luis-ortega", "social_worker", team="team-east")
NIGHT_NURSE = Person("sw-tom-becker", "social_worker", team="team-west", entitlements=BREAK_GLASS)
WEST_SUPERVISOR = Person("helen.morris", "supervisor", team="team-west")
WEST_NIGHT_SUPERVISOR = Person(
    "sup-ravi-patel", "supervisor", team="team-west", entitlements=BREAK_GLASS
)
"""Oversees team-west's cases, and breaks the glass on one of them himself."""
EAST_SUPERVISOR = Person("omar.haddad", "supervisor", team="team-east")


def still_learning(refusal: Refusal) -> bool:
    """The emergency access travels over the bus: until it arrives there is no relationship."""
    return refusal.code is grpc.StatusCode.PERMISSION_DENIED and refusal.reason == "NO_RELATIONSHIP"


async def timeline_types(casetrail: Casetrail, case: Case) -> list[str]:
    answer = await casetrail.stubs.as_(AUDITOR).audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=query("confidentiality_review"), case_id=case.case_id)
    )
    return [entry.event_type for entry in answer.entries]


async def test_breaking_the_glass_needs_the_entitlement_a_reason_and_a_bounded_window(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    intake = casetrail.stubs.as_(ON_CALL).intake
    unentitled = await refused(
        casetrail.stubs.as_(ON_CALL_UNENTITLED).intake.OpenEmergencyAccess(opening(case))
    )
    assert unentitled.code is grpc.StatusCode.PERMISSION_DENIED
    assert unentitled.reason == "ENTITLEMENT_REQUIRED"
    auditor_tries = await refused(
        casetrail.stubs.as_(
            Person("kim", "auditor", entitlements=BREAK_GLASS)
        ).intake.OpenEmergencyAccess(opening(case))
    )
    assert auditor_tries.reason == "ROLE_NOT_ALLOWED"
    # The front desk registers people and reads no case, not even by breaking the glass.
    front_desk_tries = await refused(
        casetrail.stubs.as_(
            Person("rcp-dana", "receptionist", entitlements=BREAK_GLASS)
        ).intake.OpenEmergencyAccess(opening(case))
    )
    assert front_desk_tries.reason == "ROLE_NOT_ALLOWED"
    for bad, field in (
        (opening(case, reason=""), "reason"),
        (opening(case, reason="   "), "reason"),
        (opening(case, reason="x" * 1001), "reason"),
        (opening(case, seconds=25 * 3600), "duration"),
    ):
        refusal = await refused(intake.OpenEmergencyAccess(bad))
        assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
        assert list(refusal.field_violations) == [field]
        assert REASON not in refusal.message
    missing = await refused(
        intake.OpenEmergencyAccess(opening(Case(case.client_id, "no-such-case")))
    )
    assert missing.code is grpc.StatusCode.NOT_FOUND

    opened = await intake.OpenEmergencyAccess(opening(case))
    assert opened.emergency_access_id
    window = opened.expires_at.ToDatetime(tzinfo=UTC) - opened.opened_at.ToDatetime(tzinfo=UTC)
    assert window == timedelta(minutes=60)
    types = await eventually(
        lambda: timeline_types(casetrail, case),
        lambda found: (
            "casetrail.emergency_access.opened" in found
            and "casetrail.record.access_denied" in found
        ),
        what="audit to learn of the emergency access and the refusal",
        patience=casetrail.patience,
    )
    # The refused and the invalid attempts wrote no emergency access; only the valid one did.
    assert types.count("casetrail.emergency_access.opened") == 1


async def test_the_grantee_reads_in_every_service_inside_the_window_only(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    stubs = casetrail.stubs.as_(ON_CALL)
    emergency = query("emergency")
    # Before breaking the glass: refused (once planning knows the case: NOT_FOUND until the
    # case arrives over the bus).
    before = await eventually(
        lambda: refused(
            stubs.planning.GetCaseView(
                pl.GetCaseViewRequest(context=emergency, case_id=case.case_id)
            )
        ),
        lambda refusal: refusal.code is not grpc.StatusCode.NOT_FOUND,
        what="planning to learn the case",
        patience=casetrail.patience,
    )
    assert (before.code, before.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NO_RELATIONSHIP")
    opened = await stubs.intake.OpenEmergencyAccess(opening(case))
    access_id = opened.emergency_access_id

    # Intake holds the access itself, and answered once the opening was on the bus: the other
    # services' reads of the grantee wait for their facts to hold it. Every read at once.
    await stubs.intake.GetCase(intake_pb2.GetCaseRequest(context=emergency, case_id=case.case_id))
    await stubs.planning.GetCaseView(pl.GetCaseViewRequest(context=emergency, case_id=case.case_id))
    await stubs.coordination.GetCaseCoordination(
        co.GetCaseCoordinationRequest(context=emergency, case_id=case.case_id)
    )
    await stubs.audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=emergency, case_id=case.case_id)
    )
    # Another purpose is still refused: the access is for emergencies only.
    other = await refused(
        stubs.planning.GetCaseView(
            pl.GetCaseViewRequest(context=query("direct_care"), case_id=case.case_id)
        )
    )
    assert other.reason == "NO_RELATIONSHIP"

    log_request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    log = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(log_request),
        lambda answer: (
            {"casetrail/intake", "casetrail/planning", "casetrail/coordination", "casetrail/audit"}
            <= {r.source for r in answer.records if r.accessor.user_id == ON_CALL.user_id}
        ),
        what="audit to learn of every emergency read",
        patience=casetrail.patience,
    )
    emergency_reads = [r for r in log.records if r.accessor.user_id == ON_CALL.user_id]
    assert {r.emergency_access_id for r in emergency_reads} == {access_id}
    assert {(r.rule, r.purpose) for r in emergency_reads} == {("break-glass", "emergency")}


async def test_after_the_window_a_read_is_refused_and_recorded(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "housing")
    stubs = casetrail.stubs.as_(NIGHT_NURSE)
    opened = await stubs.intake.OpenEmergencyAccess(opening(case, seconds=2))
    ends = opened.expires_at.ToDatetime(tzinfo=UTC)
    await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.1)
    request = pl.GetCaseViewRequest(context=query("emergency"), case_id=case.case_id)
    refusal = await eventually(
        lambda: refused(stubs.planning.GetCaseView(request)),
        lambda found: found.reason == "EMERGENCY_ACCESS_EXPIRED",
        what="planning to learn of the (ended) emergency access",
        patience=casetrail.patience,
    )
    assert refusal.code is grpc.StatusCode.PERMISSION_DENIED
    at_intake = await refused(
        stubs.intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("emergency"), case_id=case.case_id)
        )
    )
    assert at_intake.reason == "EMERGENCY_ACCESS_EXPIRED"
    who = audit_pb2.WhoDidWhatRequest(
        context=query("confidentiality_review"), case_id=case.case_id, actor_id=NIGHT_NURSE.user_id
    )
    activity = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.WhoDidWhat(who),
        lambda answer: any(
            a.event_type == "casetrail.record.access_denied"
            and "emergency-access-expired" in a.summary
            for a in answer.activities
        ),
        what="audit to learn of the refusal",
        patience=casetrail.patience,
    )
    assert not any(a.event_type == "casetrail.record.accessed" for a in activity.activities)


async def test_supervisors_of_the_team_review_each_emergency_access(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "housing")
    await casetrail.stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(context=command(key()), case_id=case.case_id, worker_id="sw-grace-kim")
    )
    opened = await casetrail.stubs.as_(ON_CALL).intake.OpenEmergencyAccess(opening(case))
    access_id = opened.emergency_access_id
    supervisor = casetrail.stubs.as_(WEST_SUPERVISOR).intake
    queue = intake_pb2.ListEmergencyAccessesRequest(
        context=query("supervision"), case_id=case.case_id
    )
    listed = await eventually(
        lambda: supervisor.ListEmergencyAccesses(queue),
        lambda answer: [a.emergency_access_id for a in answer.accesses] == [access_id],
        what="the team's supervisor to see the access (the assignment travels over the bus)",
        patience=casetrail.patience,
    )
    shown = listed.accesses[0]
    assert (shown.grantee.user_id, shown.reason, shown.overdue) == (ON_CALL.user_id, REASON, False)
    due = shown.review_due_at.ToDatetime(tzinfo=UTC) - shown.opened_at.ToDatetime(tzinfo=UTC)
    assert due == timedelta(hours=72)
    # Another team's supervisor does not see it; other roles and purposes are refused.
    other_team = await casetrail.stubs.as_(EAST_SUPERVISOR).intake.ListEmergencyAccesses(queue)
    assert list(other_team.accesses) == []
    for who, purpose, reason in (
        (ON_CALL, "emergency", "ROLE_NOT_ALLOWED"),
        (WEST_SUPERVISOR, "confidentiality_review", "PURPOSE_NOT_PERMITTED"),
    ):
        refusal = await refused(
            casetrail.stubs.as_(who).intake.ListEmergencyAccesses(
                intake_pb2.ListEmergencyAccessesRequest(context=query(purpose))
            )
        )
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)

    review = intake_pb2.ReviewEmergencyAccessRequest(
        context=command(key()),
        case_id=case.case_id,
        emergency_access_id=access_id,
        outcome="justified",
        note="Confirmed with the on-call log",
    )
    east = await refused(casetrail.stubs.as_(EAST_SUPERVISOR).intake.ReviewEmergencyAccess(review))
    assert east.code is grpc.StatusCode.PERMISSION_DENIED
    bad = intake_pb2.ReviewEmergencyAccessRequest()
    bad.CopyFrom(review)
    bad.outcome = "fine"
    invalid = await refused(supervisor.ReviewEmergencyAccess(bad))
    assert list(invalid.field_violations) == ["outcome"]
    await supervisor.ReviewEmergencyAccess(review)
    again = await refused(
        supervisor.ReviewEmergencyAccess(
            intake_pb2.ReviewEmergencyAccessRequest(
                context=command(key()),
                case_id=case.case_id,
                emergency_access_id=access_id,
                outcome="not_justified",
            )
        )
    )
    assert (again.code, again.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EMERGENCY_ACCESS_ALREADY_REVIEWED",
    )
    await eventually(
        lambda: supervisor.ListEmergencyAccesses(queue),
        lambda answer: not answer.accesses,
        what="the reviewed access to leave the queue",
        patience=casetrail.patience,
    )
    everything = await casetrail.stubs.as_(AUDITOR).intake.ListEmergencyAccesses(
        intake_pb2.ListEmergencyAccessesRequest(
            context=query("confidentiality_review"), case_id=case.case_id, include_reviewed=True
        )
    )
    [reviewed] = everything.accesses
    assert (reviewed.review.reviewer.user_id, reviewed.review.outcome) == (
        WEST_SUPERVISOR.user_id,
        "justified",
    )
    # A refused review is on the record too.
    refusals = audit_pb2.WhoDidWhatRequest(
        context=query("confidentiality_review"),
        case_id=case.case_id,
        actor_id=EAST_SUPERVISOR.user_id,
    )
    await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.WhoDidWhat(refusals),
        lambda answer: any(
            a.event_type == "casetrail.record.access_denied"
            and "review an emergency access" in a.summary
            for a in answer.activities
        ),
        what="audit to learn of the refused review",
        patience=casetrail.patience,
    )
    # Listing the queue is a read, on the record like any other.
    log_request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(log_request),
        lambda answer: any(
            r.accessor.user_id == WEST_SUPERVISOR.user_id
            and r.source == "casetrail/intake"
            and list(r.sections) == ["access_log"]
            and "reason" in r.fields
            for r in answer.records
        ),
        what="audit to learn of the supervisor's listing",
        patience=casetrail.patience,
    )


async def test_on_a_case_no_team_carries_the_grantees_supervisor_reviews(
    casetrail: Casetrail,
) -> None:
    """Broken into before anyone was assigned, the case has no team supervisor: the grantee's
    own supervisor sees and reviews the access (and nothing else of the case); another team's
    supervisor does not."""
    case = await new_case(casetrail, "housing")
    opened = await casetrail.stubs.as_(NIGHT_NURSE).intake.OpenEmergencyAccess(opening(case))
    access_id = opened.emergency_access_id
    queue = intake_pb2.ListEmergencyAccessesRequest(
        context=query("supervision"), case_id=case.case_id
    )
    supervisor = casetrail.stubs.as_(WEST_SUPERVISOR).intake
    listed = await eventually(
        lambda: supervisor.ListEmergencyAccesses(queue),
        lambda answer: [a.emergency_access_id for a in answer.accesses] == [access_id],
        what="the grantee's supervisor to see the access",
        patience=casetrail.patience,
    )
    assert listed.accesses[0].reason == REASON
    other_team = await casetrail.stubs.as_(EAST_SUPERVISOR).intake.ListEmergencyAccesses(queue)
    assert list(other_team.accesses) == []
    review = intake_pb2.ReviewEmergencyAccessRequest(
        context=command(key()),
        case_id=case.case_id,
        emergency_access_id=access_id,
        outcome="justified",
    )
    east = await refused(casetrail.stubs.as_(EAST_SUPERVISOR).intake.ReviewEmergencyAccess(review))
    assert east.code is grpc.StatusCode.PERMISSION_DENIED
    await supervisor.ReviewEmergencyAccess(review)
    # The supervision of the grantee opens nothing else of the case.
    view = await refused(
        casetrail.stubs.as_(WEST_SUPERVISOR).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query("supervision"), case_id=case.case_id)
        )
    )
    assert view.code is grpc.StatusCode.PERMISSION_DENIED
    log_request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(log_request),
        lambda answer: any(
            r.accessor.user_id == WEST_SUPERVISOR.user_id
            and r.rule == "grantee-supervisor"
            and list(r.sections) == ["access_log"]
            for r in answer.records
        ),
        what="audit to learn of the supervisor's listing under grantee-supervisor",
        patience=casetrail.patience,
    )


async def refusals_of(casetrail: Casetrail, case: Case, who: Person, count: int) -> list[str]:
    """The rules of ``who``'s refusals in the case's access log, once audit has ``count``."""
    log_request = audit_pb2.GetAccessLogRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    log = await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetAccessLog(log_request),
        lambda answer: (
            len([r for r in answer.refusals if r.accessor.user_id == who.user_id]) >= count
        ),
        what=f"audit to learn of {who.user_id}'s refusals",
        patience=casetrail.patience,
    )
    return [r.rule for r in log.refusals if r.accessor.user_id == who.user_id]


async def test_closed_early_an_emergency_access_grants_no_more_reads_and_awaits_review(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    await casetrail.stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(context=command(key()), case_id=case.case_id, worker_id="sw-grace-kim")
    )
    grantee = casetrail.stubs.as_(ON_CALL)
    opened = await grantee.intake.OpenEmergencyAccess(opening(case))
    access_id = opened.emergency_access_id
    view = pl.GetCaseViewRequest(context=query("emergency"), case_id=case.case_id)
    await eventually(
        lambda: grantee.planning.GetCaseView(view),
        what="planning to learn of the emergency access",
        patience=casetrail.patience,
        retry=still_learning,
    )

    def closing() -> intake_pb2.CloseEmergencyAccessRequest:
        return intake_pb2.CloseEmergencyAccessRequest(
            context=command(key()), case_id=case.case_id, emergency_access_id=access_id
        )

    # Neither someone else's worker nor another team's supervisor may close it: each refusal is
    # recorded, and neither learns whether the access exists.
    stranger = Person("sw-someone-else", "social_worker")
    for who, reason in ((stranger, "ROLE_NOT_ALLOWED"), (EAST_SUPERVISOR, "NO_RELATIONSHIP")):
        refusal = await refused(casetrail.stubs.as_(who).intake.CloseEmergencyAccess(closing()))
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)
        unknown = intake_pb2.CloseEmergencyAccessRequest(
            context=command(key()), case_id=case.case_id, emergency_access_id="emergency-none"
        )
        assert (
            await refused(casetrail.stubs.as_(who).intake.CloseEmergencyAccess(unknown))
        ).reason == reason
    assert await refusals_of(casetrail, case, stranger, 2) == ["role-not-allowed"] * 2

    client = intake_pb2.GetClientRequest(context=query("emergency"), client_id=case.client_id)
    assert (await grantee.intake.GetClient(client)).client.client_id == case.client_id
    closed = await grantee.intake.CloseEmergencyAccess(closing())
    closed_at = closed.closed_at.ToDatetime(tzinfo=UTC)
    assert closed_at < opened.expires_at.ToDatetime(tzinfo=UTC)
    # Intake holds the closing itself: refused at once (the case and its client alike);
    # planning once it arrives over the bus.
    at_intake = await refused(
        grantee.intake.GetCase(
            intake_pb2.GetCaseRequest(context=query("emergency"), case_id=case.case_id)
        )
    )
    assert at_intake.reason == "EMERGENCY_ACCESS_EXPIRED"
    assert (await refused(grantee.intake.GetClient(client))).reason == "EMERGENCY_ACCESS_EXPIRED"

    async def planning_refusal() -> str | None:
        try:
            await grantee.planning.GetCaseView(view)
        except grpc.aio.AioRpcError as error:
            return refusal_of(error).reason
        return None

    await eventually(
        planning_refusal,
        lambda reason: reason == "EMERGENCY_ACCESS_EXPIRED",
        what="planning to learn of the closing",
        patience=casetrail.patience,
    )
    again = await refused(grantee.intake.CloseEmergencyAccess(closing()))
    assert (again.code, again.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EMERGENCY_ACCESS_ENDED",
    )

    # Still awaiting review, shown closed.
    queue = intake_pb2.ListEmergencyAccessesRequest(
        context=query("supervision"), case_id=case.case_id
    )
    supervisor = casetrail.stubs.as_(WEST_SUPERVISOR).intake
    listed = await eventually(
        lambda: supervisor.ListEmergencyAccesses(queue),
        lambda answer: [a.closed_at.ToDatetime(tzinfo=UTC) for a in answer.accesses] == [closed_at],
        what="the queue to show the access closed",
        patience=casetrail.patience,
    )
    assert not listed.accesses[0].HasField("review")
    await supervisor.ReviewEmergencyAccess(
        intake_pb2.ReviewEmergencyAccessRequest(
            context=command(key()),
            case_id=case.case_id,
            emergency_access_id=access_id,
            outcome="justified",
        )
    )
    types = await eventually(
        lambda: timeline_types(casetrail, case),
        lambda found: "casetrail.emergency_access.reviewed" in found,
        what="audit to learn of the closing and the review",
        patience=casetrail.patience,
    )
    assert types.count("casetrail.emergency_access.closed") == 1


async def test_a_self_review_is_refused_and_recorded_and_an_overseer_may_close(
    casetrail: Casetrail,
) -> None:
    case = await new_case(casetrail, "housing")
    await casetrail.stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(context=command(key()), case_id=case.case_id, worker_id="sw-grace-kim")
    )
    night = casetrail.stubs.as_(WEST_NIGHT_SUPERVISOR).intake
    opened = await night.OpenEmergencyAccess(opening(case))
    access_id = opened.emergency_access_id

    def own_review() -> Awaitable[Refusal]:
        return refused(
            night.ReviewEmergencyAccess(
                intake_pb2.ReviewEmergencyAccessRequest(
                    context=command(key()),
                    case_id=case.case_id,
                    emergency_access_id=access_id,
                    outcome="justified",
                )
            )
        )

    # He oversees the case's team (once intake learns the assignment) but not his own access.
    refusal = await eventually(
        own_review,
        lambda found: found.reason != "NO_RELATIONSHIP",
        what="intake to learn of the assignment",
        patience=casetrail.patience,
    )
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SELF_REVIEW_NOT_ALLOWED",
    )
    rules = await eventually(
        lambda: refusals_of(casetrail, case, WEST_NIGHT_SUPERVISOR, 1),
        lambda found: "self-review-not-allowed" in found,
        what="audit to learn of the refused self-review",
        patience=casetrail.patience,
    )
    assert set(rules) <= {"no-relationship", "self-review-not-allowed"}

    # Another supervisor of the team closes it for him.
    closed = await casetrail.stubs.as_(WEST_SUPERVISOR).intake.CloseEmergencyAccess(
        intake_pb2.CloseEmergencyAccessRequest(
            context=command(key()), case_id=case.case_id, emergency_access_id=access_id
        )
    )
    assert closed.closed_at.ToDatetime(tzinfo=UTC) < opened.expires_at.ToDatetime(tzinfo=UTC)
    after = await refused(
        night.GetCase(intake_pb2.GetCaseRequest(context=query("emergency"), case_id=case.case_id))
    )
    assert after.reason == "EMERGENCY_ACCESS_EXPIRED"


async def test_the_cli_opens_lists_and_reviews(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "housing")
    intake = ["--intake", casetrail.addresses["intake"]]
    status, out, err = await casetrail_cli(
        "break-glass", "open", case.case_id, "--reason", REASON, "--minutes", "30",
        *intake, "--token", casetrail.tokens(ON_CALL),
    )  # fmt: skip
    assert status == 0, err
    access_id = out.split()[2]
    status, _, err = await casetrail_cli(
        "break-glass", "open", case.case_id, "--reason", "", *intake,
        token=casetrail.tokens(ON_CALL),
    )  # fmt: skip
    assert (status, "reason" in err) == (1, True)
    # Each field's problem once: INVALID_ARGUMENT's message lists them too, not printed again.
    assert [line for line in err.splitlines() if not line.startswith("  ")] == [
        "refused: INVALID_ARGUMENT"
    ], err

    auditor = [*intake, "--token", casetrail.tokens(AUDITOR)]

    async def listed() -> list[dict[str, object]]:
        status, out, err = await casetrail_cli(
            "break-glass", "reviews", "--case", case.case_id, "--json", *auditor
        )
        assert status == 0, err
        return [json.loads(line) for line in out.splitlines()]

    queue = await eventually(listed, bool, what="the queue to show it", patience=casetrail.patience)
    assert [entry["emergency_access_id"] for entry in queue] == [access_id]
    status, out, err = await casetrail_cli(
        "break-glass", "close", case.case_id, access_id,
        *intake, "--token", casetrail.tokens(ON_CALL),
    )  # fmt: skip
    assert status == 0, err
    assert f"emergency access {access_id} closed at" in out
    queue = await eventually(
        listed,
        lambda found: all("closed_at" in entry for entry in found),
        what="the queue to show it closed",
        patience=casetrail.patience,
    )
    status, out, err = await casetrail_cli(
        "break-glass", "review", case.case_id, access_id, "--outcome", "escalated",
        "--note", "Asked the on-call manager", *auditor,
    )  # fmt: skip
    assert status == 0, err
    await eventually(
        listed, lambda found: not found, what="the queue to empty", patience=casetrail.patience
    )
