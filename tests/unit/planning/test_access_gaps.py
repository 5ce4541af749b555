"""Planning's reads and the access record: what a list shows is what it records, a filter does
not disclose what the answer withholds, every refusal is recorded, a refused role learns nothing
of which cases exist, and a translated validation error carries no sensitive input."""

from __future__ import annotations

import traceback

import grpc
import pytest
from google.rpc import error_details_pb2

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.commands import CommandContext, InvalidCommand
from casetrail_platform.policy.guard import REDACTED_KEY
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.access import (
    AccessPurpose,
    ConsentGranted,
    ConsentRecipient,
    RecipientKind,
    RecordAccessDenied,
    RecordAccessed,
    RecordSection,
)
from events.catalog.assessment import AssessedNeed, AssessmentFactors, InitialAssessmentRecorded
from events.catalog.cases import (
    CaseOpened,
    DischargeReason,
    PresentingNeed,
    ReferralSource,
    ReferralSourceKind,
)
from events.catalog.monitoring import GoalProgress, ProgressRating
from events.catalog.scheduling import ServiceKind
from events.catalog.values import NeedCategory, Urgency
from events.envelope import Actor
from services.planning.app.handlers import Dependencies, handle
from services.planning.app.queries import CASE_LIST
from services.planning.domain import commands as c
from tests.support.identity import acting
from tests.unit.planning.conftest import Planning
from tests.unit.planning.support import (
    COORDINATOR,
    INTAKE,
    INTAKE_WORKER,
    OTHER_WORKER,
    PHYSIO,
    RECEPTIONIST,
    START,
    SUPERVISOR,
    WORKER,
    Bus,
    assigned,
    ctx,
    delivered,
    goal,
    one,
    query,
    referral,
    referral_accepted,
    refused,
    reopened,
    scheduled,
)

HEROIN = "heroin relapse at the weekend"


async def open_case(bus: Bus, case_id: str, *needs: NeedCategory, worker: Actor = WORKER) -> None:
    opened = CaseOpened(
        case_id=case_id,
        client_id=f"client-{case_id}",
        referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
        presenting_needs=tuple(PresentingNeed(category=need) for need in needs),
    )
    await bus.record(INTAKE, case_id, opened, actor=INTAKE_WORKER)
    # The plan builds on the initial assessment: recorded with the very needs presented.
    assessment = InitialAssessmentRecorded(
        case_id=case_id,
        assessment_id=f"assess-{case_id}",
        factors=AssessmentFactors(social="Lives alone"),
        needs=tuple(AssessedNeed(category=need, urgency=Urgency.SOON) for need in needs),
    )
    await bus.record(INTAKE, case_id, assessment, actor=INTAKE_WORKER)
    await bus.record("casetrail/coordination", case_id, assigned(case_id, worker))


async def recorded(
    store: SqliteEventStore, after: int = 0
) -> list[RecordAccessed | RecordAccessDenied]:
    """The accesses and refusals planning recorded after position ``after``."""
    return [
        event.event
        for event in await store.read_all(after)
        if isinstance(event.event, RecordAccessed | RecordAccessDenied)
    ]


async def position(store: SqliteEventStore) -> int:
    events = await store.read_all(0)
    return events[-1].position if events else 0


# 1. ListCases shows no more than it records.


async def test_a_sensitive_need_filter_is_refused_to_a_reader_it_would_disclose_it_to(
    planning: Planning,
) -> None:
    await open_case(planning.bus, "case-su", NeedCategory.SUBSTANCE_USE, NeedCategory.HOUSING)
    await open_case(planning.bus, "case-h", NeedCategory.HOUSING)
    before = await position(planning.store)

    code, details = await refused(
        planning.stub.ListCases(
            planning_pb2.ListCasesRequest(context=query(), need="substance_use")
        )
    )

    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert one(details, error_details_pb2.ErrorInfo).reason == "SENSITIVE_FILTER_NOT_PERMITTED"
    [denied] = await recorded(planning.store, before)
    assert isinstance(denied, RecordAccessDenied)
    assert (denied.case_id, denied.rule) == (CASE_LIST, "sensitive-filter-not-permitted")
    # A need that is not health data filters as before, and so does the worker who may see it.
    housing = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(), need="housing")
    )
    assert sorted(case.case_id for case in housing.cases) == ["case-h", "case-su"]
    own = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(WORKER), need="substance_use")
    )
    assert [(case.case_id, sorted(case.needs)) for case in own.cases] == [
        ("case-su", ["housing", "substance_use"])
    ]


async def test_a_listed_case_records_every_section_its_summary_shows(planning: Planning) -> None:
    await open_case(planning.bus, "case-1", NeedCategory.HOUSING)
    await planning.stub.LogContact(
        planning_pb2.LogContactRequest(
            context=ctx(key="contact"),
            case_id="case-1",
            kind="phone_call",
            summary="Called about the flat",
            next_follow_up_due="2099-01-01",
        )
    )
    await planning.bus.sync()
    before = await position(planning.store)

    answer = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(), overdue_before="2100-01-01")
    )

    [summary] = answer.cases
    assert (summary.next_follow_up_due, summary.status) == ("2099-01-01", "open")
    [access] = await recorded(planning.store, before)
    assert isinstance(access, RecordAccessed)
    assert set(access.sections) == {
        RecordSection.IDENTITY,
        RecordSection.ASSESSMENT,
        RecordSection.ASSIGNMENT,
        RecordSection.CONTACTS,
        RecordSection.REFERRALS,
        RecordSection.SERVICES,
        RecordSection.DISCHARGE,
    }


async def test_a_summary_counts_only_the_services_and_referrals_its_reader_is_shown(
    planning: Planning,
) -> None:
    """A coordinator's case view lists no addiction counseling and no referral for substance
    use, and its totals count neither; the summary counted both, telling what the view hides."""
    await open_case(planning.bus, "case-su", NeedCategory.SUBSTANCE_USE, NeedCategory.HOUSING)
    counseling = scheduled("case-su", "svc-counseling").model_copy(
        update={"kind": ServiceKind.ADDICTION_COUNSELING}
    )
    detox = referral("case-su", "ref-detox").model_copy(
        update={"need_category": NeedCategory.SUBSTANCE_USE}
    )
    await planning.bus.record(
        "casetrail/coordination",
        "case-su",
        counseling,
        scheduled("case-su", "svc-physio", day=1),
        detox,
        referral("case-su", "ref-physio"),
    )

    async def counted(context: common_pb2.QueryContext) -> tuple[int, int, int, int]:
        listed = await planning.stub.ListCases(planning_pb2.ListCasesRequest(context=context))
        [summary] = listed.cases
        view = await planning.stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(context=context, case_id="case-su")
        )
        return (
            summary.scheduled_services,
            summary.open_referrals,
            view.services_total,
            view.referrals_total,
        )

    assert await counted(query()) == (1, 1, 1, 1)  # a coordinator
    assert await counted(query(WORKER, "direct_care")) == (2, 2, 2, 2)


async def test_a_service_in_the_view_names_no_referral_withheld_from_its_reader(
    planning: Planning,
) -> None:
    """A referral for substance use is withheld whole from a coordinator, yet a service booked
    from it (of a kind no special data) named it: an id no referral of the view has could only
    be a withheld one's. Its reader is shown the service without it, and told it was withheld
    (``services.referral_id``, listed whatever the case holds)."""
    await open_case(planning.bus, "case-su", NeedCategory.SUBSTANCE_USE, NeedCategory.HOUSING)
    detox = referral("case-su", "ref-detox").model_copy(
        update={"need_category": NeedCategory.SUBSTANCE_USE}
    )
    from_detox = scheduled("case-su", "svc-detox").model_copy(update={"referral_id": "ref-detox"})
    from_physio = scheduled("case-su", "svc-physio", day=1).model_copy(
        update={"referral_id": "ref-physio"}
    )
    await planning.bus.record(
        "casetrail/coordination",
        "case-su",
        detox,
        referral("case-su", "ref-physio"),
        from_detox,
        from_physio,
    )

    async def read(context: common_pb2.QueryContext) -> tuple[dict[str, str], list[str]]:
        call = planning.stub.GetCaseView(
            planning_pb2.GetCaseViewRequest(context=context, case_id="case-su")
        )
        view = await call
        withheld = dict(await call.trailing_metadata()).get(REDACTED_KEY, "")
        return {s.service_id: s.referral_id for s in view.services}, withheld.split(",")

    links, withheld = await read(query())  # a coordinator
    assert links == {"svc-detox": "", "svc-physio": "ref-physio"}
    assert "services.referral_id" in withheld
    links, withheld = await read(query(WORKER, "direct_care"))
    assert links == {"svc-detox": "ref-detox", "svc-physio": "ref-physio"}
    assert "services.referral_id" not in withheld


async def test_a_closure_refusal_names_no_entry_withheld_from_its_caller(
    planning: Planning,
) -> None:
    """A coordinator's case view lists no addiction counseling and no referral for substance
    use, yet the closure's refusal listed their ids among the ones blocking it. To a caller not
    entitled they are left out, in the same words whether the case has any; they still block."""
    for case_id in ("case-su", "case-plain"):
        await open_case(planning.bus, case_id, NeedCategory.SUBSTANCE_USE, NeedCategory.HOUSING)
        await planning.bus.record(
            "casetrail/coordination",
            case_id,
            scheduled(case_id, "svc-physio", day=1),
            referral(case_id, "ref-physio"),
        )
    await planning.bus.record(
        "casetrail/coordination",
        "case-su",
        scheduled("case-su", "svc-counseling").model_copy(
            update={"kind": ServiceKind.ADDICTION_COUNSELING}
        ),
        referral("case-su", "ref-detox").model_copy(
            update={"need_category": NeedCategory.SUBSTANCE_USE}
        ),
    )

    async def refusal(actor: Actor, case_id: str) -> tuple[str, dict[str, str], str]:
        close = planning_pb2.CloseCaseRequest(
            context=ctx(actor, key=f"close-{actor.user_id}-{case_id}"),
            case_id=case_id,
            reason="client_moved",
        )
        code, details = await refused(planning.stub.CloseCase(close))
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        info = one(details, error_details_pb2.ErrorInfo)
        message = one(details, error_details_pb2.PreconditionFailure).violations[0].description
        # Compared across the two cases: each names its own.
        metadata = {key: value for key, value in info.metadata.items() if key != "subject"}
        return info.reason, metadata, message.replace(case_id, "<case>")

    rule, metadata, message = await refusal(COORDINATOR, "case-su")
    assert rule == "SERVICES_STILL_SCHEDULED"
    assert metadata["service_ids"] == "svc-physio"
    assert "svc-counseling" not in message
    # Said alike of a case with no such service.
    assert await refusal(COORDINATOR, "case-plain") == (rule, metadata, message)
    # The case's worker, entitled, is told every one.
    _, told, _ = await refusal(WORKER, "case-su")
    assert told["service_ids"] == "svc-counseling,svc-physio"

    # Only a withheld service left: the closure is still refused, naming none.
    await planning.bus.record(
        "casetrail/coordination", "case-su", delivered("case-su", "svc-physio")
    )
    rule, metadata, message = await refusal(COORDINATOR, "case-su")
    assert (rule, metadata["service_ids"]) == ("SERVICES_STILL_SCHEDULED", "")
    assert "svc-counseling" not in message
    await planning.bus.record(
        "casetrail/coordination", "case-su", delivered("case-su", "svc-counseling")
    )
    await planning.bus.record(
        "casetrail/coordination", "case-plain", delivered("case-plain", "svc-physio")
    )

    # Referrals alike.
    rule, metadata, message = await refusal(COORDINATOR, "case-su")
    assert (rule, metadata["referral_ids"]) == ("REFERRALS_STILL_RUNNING", "ref-physio")
    assert "ref-detox" not in message
    _, plain, plain_message = await refusal(COORDINATOR, "case-plain")
    assert (plain, plain_message) == (metadata, message)
    _, told, _ = await refusal(WORKER, "case-su")
    assert told["referral_ids"] == "ref-detox,ref-physio"


# 2. Every refusal of a list is recorded.


async def test_a_role_no_rule_lets_list_cases_is_refused_and_recorded(planning: Planning) -> None:
    await open_case(planning.bus, "case-1", NeedCategory.HOUSING)
    before = await position(planning.store)

    code, details = await refused(
        planning.stub.ListCases(
            planning_pb2.ListCasesRequest(context=query(RECEPTIONIST, "direct_care"))
        )
    )

    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert one(details, error_details_pb2.ErrorInfo).reason == "ROLE_NOT_ALLOWED"
    [denied] = await recorded(planning.store, before)
    assert isinstance(denied, RecordAccessDenied)
    assert (denied.case_id, denied.rule, denied.action) == (
        CASE_LIST,
        "role-not-allowed",
        "list cases",
    )


async def test_an_intake_worker_lists_as_the_policy_lets_them_without_sensitive_needs(
    planning: Planning,
) -> None:
    await open_case(planning.bus, "case-su", NeedCategory.SUBSTANCE_USE, NeedCategory.HOUSING)
    before = await position(planning.store)

    answer = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(INTAKE_WORKER, "direct_care"))
    )

    assert [(case.case_id, list(case.needs)) for case in answer.cases] == [("case-su", ["housing"])]
    [access] = await recorded(planning.store, before)
    assert isinstance(access, RecordAccessed)
    assert (access.rule, access.redacted_fields) == ("intake-worker", ("needs",))


async def test_a_list_is_said_truncated_only_when_it_shows_every_case_found(
    planning: Planning,
) -> None:
    """A supervisor shown none of the cases found (no team of theirs carries them) must not
    learn from the flag that more than a page of them match."""
    for n in range(3):
        await open_case(planning.bus, f"case-{n}", NeedCategory.HOUSING)
    by_supervisor = planning_pb2.ListCasesRequest(
        context=query(SUPERVISOR, "supervision"), page_size=2
    )
    answer = await planning.stub.ListCases(by_supervisor)
    assert (list(answer.cases), answer.truncated) == ([], False)
    shown_all = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(), page_size=2)
    )
    assert (len(shown_all.cases), shown_all.truncated) == (2, True)


async def test_listing_another_workers_cases_is_refused_and_recorded(planning: Planning) -> None:
    await open_case(planning.bus, "case-1", NeedCategory.HOUSING)
    before = await position(planning.store)

    code, details = await refused(
        planning.stub.ListCases(
            planning_pb2.ListCasesRequest(context=query(OTHER_WORKER), worker_id=WORKER.user_id)
        )
    )

    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert one(details, error_details_pb2.ErrorInfo).reason == "NO_RELATIONSHIP"
    [denied] = await recorded(planning.store, before)
    assert isinstance(denied, RecordAccessDenied)
    assert (denied.case_id, denied.accessor_id, denied.rule) == (
        CASE_LIST,
        OTHER_WORKER.user_id,
        "no-relationship",
    )


@pytest.mark.parametrize(
    ("staff", "purpose"), [(COORDINATOR, "coordination"), (WORKER, "direct_care")]
)
async def test_another_agencys_caller_is_refused_the_list_of_cases_on_the_record(
    planning: Planning, staff: Actor, purpose: str
) -> None:
    """The list is the agency's: another agency's caller in a role that lists cases here (a
    coordinator, a social worker whose ``sub`` is one of the agency's workers') is refused
    before the cases are looked up. Before, each case found was left out, the empty answer on
    no record."""
    await open_case(planning.bus, "case-1", NeedCategory.HOUSING)
    listed = await planning.stub.ListCases(
        planning_pb2.ListCasesRequest(context=query(staff, purpose))
    )
    assert [case.case_id for case in listed.cases] == ["case-1"]
    before = await position(planning.store)
    namesake = acting(
        Person(staff.user_id, staff.role.value, agency="westside-dss"),
        common_pb2.QueryContext(purpose=purpose),
    )

    code, details = await refused(
        planning.stub.ListCases(planning_pb2.ListCasesRequest(context=namesake))
    )

    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert one(details, error_details_pb2.ErrorInfo).reason == "NO_RELATIONSHIP"
    [denied] = await recorded(planning.store, before)
    assert isinstance(denied, RecordAccessDenied)
    assert (denied.case_id, denied.rule, denied.accessor_agency_id) == (
        CASE_LIST,
        "no-relationship",
        "westside-dss",
    )


# 3. A refused caller cannot tell which cases exist.


@pytest.mark.parametrize(
    ("reader", "purpose", "reason"),
    [
        (RECEPTIONIST, "direct_care", "ROLE_NOT_ALLOWED"),
        (OTHER_WORKER, "direct_care", "NO_RELATIONSHIP"),
    ],
)
async def test_a_refused_reader_gets_the_same_answer_for_a_real_and_an_unknown_case(
    planning: Planning, reader: Actor, purpose: str, reason: str
) -> None:
    await open_case(planning.bus, "case-1", NeedCategory.HOUSING)
    before = await position(planning.store)

    answers = [
        await refused(
            planning.stub.GetCaseView(
                planning_pb2.GetCaseViewRequest(context=query(reader, purpose), case_id=case_id)
            )
        )
        for case_id in ("case-1", "case-unknown")
    ]

    assert [
        (code, one(details, error_details_pb2.ErrorInfo).reason) for code, details in answers
    ] == [(grpc.StatusCode.PERMISSION_DENIED, reason)] * 2
    denials = await recorded(planning.store, before)
    assert [(d.case_id, type(d)) for d in denials] == [
        ("case-1", RecordAccessDenied),
        ("case-unknown", RecordAccessDenied),
    ]


# 4. Validation errors: no sensitive input chained, and the edge compares what is recorded.


async def test_repeated_goal_ids_are_compared_as_recorded_and_named_at_the_edge(
    planning: Planning,
) -> None:
    await open_case(planning.bus, "case-1", NeedCategory.HOUSING)
    drafted_code, drafted = await refused(
        planning.stub.DraftPlan(
            planning_pb2.DraftPlanRequest(
                context=ctx(key="draft-twice"),
                case_id="case-1",
                goals=[
                    planning_pb2.Goal(
                        goal_id=goal_id, statement=HEROIN, term="short", need_category="housing"
                    )
                    for goal_id in ("g1", " g1")
                ],
            )
        )
    )
    await planning.stub.DraftPlan(
        planning_pb2.DraftPlanRequest(
            context=ctx(key="draft"),
            case_id="case-1",
            goals=[
                planning_pb2.Goal(
                    goal_id="g1", statement="Keep the flat", term="short", need_category="housing"
                )
            ],
        )
    )
    await planning.stub.RecordAgreement(
        planning_pb2.RecordAgreementRequest(
            context=ctx(key="agree"), case_id="case-1", signed_by_client=True
        )
    )

    code, details = await refused(
        planning.stub.EvaluateProgress(
            planning_pb2.EvaluateProgressRequest(
                context=ctx(key="evaluate"),
                case_id="case-1",
                goal_progress=[
                    planning_pb2.GoalProgress(goal_id="g1", rating="on_track", note=HEROIN),
                    planning_pb2.GoalProgress(goal_id="g1 ", rating="on_track", note=HEROIN),
                ],
            )
        )
    )

    assert code is drafted_code is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = one(details, error_details_pb2.BadRequest).field_violations
    assert violation.field == "goal_progress[1].goal_id"
    assert "repeats goal_progress[0].goal_id" in violation.description
    [violation] = one(drafted, error_details_pb2.BadRequest).field_violations
    assert violation.field == "goals[1].goal_id"


async def test_an_event_refused_by_its_validator_is_answered_without_the_input_chained(
    deps: Dependencies, bus: Bus
) -> None:
    await open_case(bus, "case-1", NeedCategory.HOUSING)

    async def run(command: c.Command, key: str) -> None:
        await handle(deps, CommandContext(WORKER, key, occurred_at=START), command)
        await bus.sync()

    await run(c.DraftPlan("case-1", "plan-1", (goal("g1"),)), "draft")
    await run(c.RecordAgreement("case-1", None, None, True), "agree")
    # Built past the edge's checks: only the event's own validator sees the repeat.
    progress = tuple(
        GoalProgress(goal_id="g1", rating=ProgressRating.ON_TRACK, note=HEROIN) for _ in "ab"
    )
    evaluate = c.EvaluateProgress("case-1", "eval-1", progress, (), (), False)

    with pytest.raises(InvalidCommand) as raised:
        await run(evaluate, "evaluate")

    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert "heroin" not in "".join(traceback.format_exception(raised.value))
    assert [problem.field for problem in raised.value.violations] == ["goal_progress"]


# A reopened case's earlier plans are shown as history, disclosed as the current plan is.


async def test_earlier_plans_are_shown_and_withheld_as_the_current_plan_is(
    planning: Planning, deps: Dependencies
) -> None:
    await open_case(planning.bus, "case-1", NeedCategory.SUBSTANCE_USE)
    relapse = goal("goal-sober", HEROIN)
    commands: list[c.Command] = [
        c.DraftPlan("case-1", "plan-1", (relapse,)),
        c.RecordAgreement("case-1", None, "yes", signed_by_client=True),
        c.AchieveGoal("case-1", "goal-sober", None),
        c.CloseCase("case-1", DischargeReason.GOALS_ACHIEVED, None),
    ]
    for key, command in enumerate(commands):
        await handle(deps, CommandContext(WORKER, f"k{key}", occurred_at=START), command)
    await planning.bus.record(INTAKE, "case-1", reopened("case-1"), actor=INTAKE_WORKER)
    view = planning_pb2.GetCaseViewRequest(context=query(), case_id="case-1")

    shown = await planning.stub.GetCaseView(view)  # a coordinator: no sensitive fields
    own = await planning.stub.GetCaseView(
        planning_pb2.GetCaseViewRequest(context=query(WORKER, "direct_care"), case_id="case-1")
    )

    assert not shown.HasField("plan")
    [earlier] = shown.previous_plans
    [entry] = earlier.goals
    assert (earlier.plan_id, entry.goal.goal_id, entry.status) == (
        "plan-1",
        "goal-sober",
        "achieved",
    )
    assert HEROIN not in str(shown)
    assert own.previous_plans[0].goals[0].goal.statement == HEROIN


async def test_a_partner_is_shown_nothing_of_the_cases_stage_status_or_earlier_cycles(
    planning: Planning, deps: Dependencies
) -> None:
    """A partner's decision discloses identity, referrals and services: the stage (assigned,
    planned, agreed), the status and how many cycles the case had were under no section, so
    every partner was told them."""
    await open_case(planning.bus, "case-1", NeedCategory.HOUSING)
    commands: list[c.Command] = [
        c.DraftPlan("case-1", "plan-1", (goal(),)),
        c.RecordAgreement("case-1", None, "yes", signed_by_client=True),
        c.AchieveGoal("case-1", "goal-walk", None),
        c.CloseCase("case-1", DischargeReason.GOALS_ACHIEVED, None),
    ]
    for key, command in enumerate(commands):
        await handle(deps, CommandContext(WORKER, f"k{key}", occurred_at=START), command)
    await planning.bus.record(INTAKE, "case-1", reopened("case-1"), actor=INTAKE_WORKER)
    consent = ConsentGranted(
        case_id="case-1",
        client_id="client-case-1",
        consent_id="consent-physio",
        scope=(RecordSection.IDENTITY, RecordSection.REFERRALS, RecordSection.SERVICES),
        recipient=ConsentRecipient(
            kind=RecipientKind.AGENCY, recipient_id=PHYSIO.provider_id, name=PHYSIO.name
        ),
        purpose=AccessPurpose.COORDINATION,
    )
    await planning.bus.record(INTAKE, "case-1", consent, actor=INTAKE_WORKER)
    made = referral("case-1").model_copy(update={"consent_id": "consent-physio"})
    await planning.bus.record("casetrail/coordination", "case-1", made)
    await planning.bus.record("casetrail/coordination", "case-1", referral_accepted("case-1"))
    partner = Person(PHYSIO.provider_id, "partner_agency", agency=PHYSIO.provider_id)
    request = planning_pb2.GetCaseViewRequest(
        context=acting(partner, common_pb2.QueryContext(purpose="coordination")),
        case_id="case-1",
    )

    shown = await planning.stub.GetCaseView(request)

    assert [r.referral_id for r in shown.referrals] == ["ref-1"]
    assert (shown.stage, shown.status) == ("", "")
    assert (shown.previous_plans_total, shown.previous_plans_truncated) == (0, False)
    own = await planning.stub.GetCaseView(
        planning_pb2.GetCaseViewRequest(context=query(WORKER, "direct_care"), case_id="case-1")
    )
    assert (own.stage, own.status, own.previous_plans_total) == ("assigned", "open", 1)


# Ids checked at the edge.


async def test_a_malformed_worker_id_filter_is_refused_before_any_decision(
    planning: Planning,
) -> None:
    """ListCases' worker_id is checked as the catalog's id with the rest of the request, before
    the policy decides, whoever asks (before: a coordinator was answered an empty list, a role
    no rule lets list cases PERMISSION_DENIED)."""
    for context in (query(), query(RECEPTIONIST, "direct_care")):
        for bad in ("bad id!", "x" * 65, "a/b"):
            code, details = await refused(
                planning.stub.ListCases(
                    planning_pb2.ListCasesRequest(context=context, worker_id=bad)
                )
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT, bad
            violations = one(details, error_details_pb2.BadRequest).field_violations
            assert [v.field for v in violations] == ["worker_id"]
