"""The ``casetrail.planning.v1.PlanningService`` servicer: requests to commands, outcomes to
responses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, tzinfo
from typing import TypeVar

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.ages import agency_today
from casetrail_platform.commands import CommandContext
from casetrail_platform.decide import recorded_before
from casetrail_platform.grpc_platform.context import (
    read_command,
    read_query,
    read_timely_command,
)
from casetrail_platform.grpc_platform.server import Context, refusals_as_status
from casetrail_platform.identity.grpc_auth import principal_of
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy import redaction
from casetrail_platform.policy.guard import AccessControl, Disclosure
from casetrail_platform.policy.vocabulary import Action as PolicyAction
from casetrail_platform.policy.vocabulary import Decision
from events.catalog.access import AccessPurpose, RecordSection
from events.catalog.base import CaseEvent, Role
from events.catalog.monitoring import ContactLogged, ProgressEvaluated
from events.catalog.planning import GoalAdded, PlanAgreed, PlanDrafted
from events.envelope import RecordedEvent
from services.planning.app import queries
from services.planning.app.handlers import SOURCE, Dependencies, Outcome, handle
from services.planning.domain.commands import Command
from services.planning.domain.decisions import TOLD_AS_SHOWN
from services.planning.entrypoints import present, translate

SERVICE_NAME = planning_pb2.DESCRIPTOR.services_by_name["PlanningService"].full_name

E = TypeVar("E", bound=CaseEvent)
C = TypeVar("C", bound=Command)


CASE_VIEW_SENSITIVE_PATHS = (
    "needs.category",
    "plan.goals.goal.statement",
    "plan.goals.goal.need_category",
    "plan.goals.goal.objectives",
    "plan.goals.goal.tasks",
    "previous_plans.goals.goal.statement",
    "previous_plans.goals.goal.need_category",
    "previous_plans.goals.goal.objectives",
    "previous_plans.goals.goal.tasks",
    "services.kind",
    "referrals.need_category",
    "referrals.service",
    "discharge.criteria",
    "discharge.aftercare",
)
"""Where the catalog's sensitive fields (events/schemas/catalog.json) show in a case view
(GetCaseViewResponse)."""
CASE_VIEW_SECTIONS = (
    RecordSection.IDENTITY,
    RecordSection.ASSESSMENT,
    RecordSection.ASSIGNMENT,
    RecordSection.PLAN,
    RecordSection.REFERRALS,
    RecordSection.SERVICES,
    RecordSection.CONTACTS,
    RecordSection.PROGRESS,
    RecordSection.DISCHARGE,
)
CASE_VIEW_SECTION_PATHS = {
    RecordSection.ASSESSMENT: ("needs",),
    RecordSection.ASSIGNMENT: ("worker", "stage"),
    RecordSection.PLAN: (
        "plan",
        "previous_plans",
        "previous_plans_total",
        "previous_plans_truncated",
        "stage",
    ),
    RecordSection.CONTACTS: ("next_follow_up_due", "last_contact_on", "contacts_logged"),
    RecordSection.PROGRESS: ("plan.goals.latest_rating", "previous_plans.goals.latest_rating"),
    # Open or closed, and the stage "closed": whether the case was discharged.
    RecordSection.DISCHARGE: ("discharge", "closure_reason", "status", "stage"),
    RecordSection.REFERRALS: ("referrals", "referrals_truncated", "referrals_total"),
    RecordSection.SERVICES: ("services", "services_truncated", "services_total"),
}
"""Where each section shows in a case view; the case and client ids are its identity. A field
that tells of several sections is under each (the stage: assigned, planned, agreed, closed),
so that it is withheld unless every one is disclosed (``AccessControl.release`` clears the
paths of each section a decision does not disclose)."""
CASE_VIEW_REFERRAL_PATHS = {"referrals": "referral_id", "services": "referral_id"}
CASE_VIEW_SPECIAL_ENTRIES = ("referrals.need_category", "services.kind")
"""The sensitive paths of a case view that withhold whole entries (of a special-data need or
kind), so that a caller not entitled to them is shown fewer (``redaction``)."""
CASE_VIEW_REFERRAL_LINK = "services.referral_id"
"""Where a service names the referral it was booked from: cleared for a caller not entitled to
sensitive values when that referral is of a special-data need (``Disclosure.special_links``),
as the referral is withheld whole: an id no referral of the view has could only be its."""
CASE_VIEW_GOAL_LINK = "services.goal_id"
"""Where a service names the goal it was booked toward: cleared for a caller not entitled to
sensitive values when that goal's need is special data (``Disclosure.special_links``), as the
goal is withheld whole from the plan (or the earlier plan) it is in: an id no goal of the view
has could only be its."""
CASE_VIEW_SPECIAL_GOALS = (
    "plan.goals.goal.need_category",
    "previous_plans.goals.goal.need_category",
)
"""Where the goals of a case view sit by their need, each withheld whole when it is special
data (``CASE_VIEW_SENSITIVE_PATHS``)."""
SUMMARY_SENSITIVE_PATHS = ("needs",)
SUMMARY_SECTION_PATHS = {
    RecordSection.ASSESSMENT: ("needs",),
    RecordSection.ASSIGNMENT: ("worker_id",),
    RecordSection.CONTACTS: ("next_follow_up_due",),
    RecordSection.REFERRALS: ("open_referrals",),
    RecordSection.SERVICES: ("scheduled_services",),
    # Open or closed, and the stage "closed": whether the case was discharged.
    RecordSection.DISCHARGE: ("status", "stage"),
}
"""Where each section shows in a case summary (CaseSummary); the case and client ids are its
identity."""
SUMMARY_SECTIONS = (RecordSection.IDENTITY, *SUMMARY_SECTION_PATHS)
"""What a listed case's access records: every section its summary shows (a decision that does
not disclose one clears its fields)."""


class PlanningServicer(planning_pb2_grpc.PlanningServiceServicer):
    def __init__(
        self,
        deps: Dependencies,
        access: AccessControl,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        time_zone: tzinfo = UTC,
    ) -> None:
        """``time_zone``: the agency's (``CASETRAIL_AGENCY_TIME_ZONE``), whose dates the
        days planning checks are (``_day``), as intake's and coordination's."""
        self._deps = deps
        self._access = access
        self._clock = clock
        self._time_zone = time_zone

    def _parse(
        self,
        context: Context,
        request_context: common_pb2.CommandContext,
        read: Callable[[CommandContext], C],
    ) -> tuple[CommandContext, C]:
        """The command context and ``read(context)``, every bad field of both refused at once,
        and first a caller the agency does not employ (``read_command``)."""
        return read_command(
            principal_of(context), request_context, read, home_agency=self._access.home_agency
        )

    async def _parse_timely(
        self,
        context: Context,
        request_context: common_pb2.CommandContext,
        read: Callable[[CommandContext, bool], C],
    ) -> tuple[CommandContext, C, list[RecordedEvent] | None]:
        """``_parse`` for a request checked against the server's day too: a retry the day
        has since passed gets what it recorded (``read_timely_command``)."""
        return await read_timely_command(
            principal_of(context),
            request_context,
            read,
            lambda ctx: recorded_before(self._deps.store, SOURCE, ctx),
            home_agency=self._access.home_agency,
        )

    @refusals_as_status
    async def DraftPlan(
        self, request: planning_pb2.DraftPlanRequest, context: Context
    ) -> planning_pb2.DraftPlanResponse:
        command_context, command = self._parse(
            context, request.context, lambda ctx: translate.draft_plan(request, ctx)
        )
        outcome = await self._run(principal_of(context), command_context, command)
        # A retry answers with what was recorded the first time, not with this request's ids.
        drafted = _first(outcome, PlanDrafted)
        goals = command.goals if drafted is None else drafted.goals
        return planning_pb2.DraftPlanResponse(
            result=self._result(command, outcome),
            plan_id=command.plan_id if drafted is None else drafted.plan_id,
            goal_ids=[goal.goal_id for goal in goals],
        )

    @refusals_as_status
    async def AddGoal(
        self, request: planning_pb2.AddGoalRequest, context: Context
    ) -> planning_pb2.AddGoalResponse:
        command_context, command = self._parse(
            context, request.context, lambda ctx: translate.add_goal(request, ctx)
        )
        outcome = await self._run(principal_of(context), command_context, command)
        added = _first(outcome, GoalAdded)
        return planning_pb2.AddGoalResponse(
            result=self._result(command, outcome),
            goal_id=(command.goal if added is None else added.goal).goal_id,
            plan_version=outcome.plan_version,
        )

    @refusals_as_status
    async def ReviseGoal(
        self, request: planning_pb2.ReviseGoalRequest, context: Context
    ) -> planning_pb2.ReviseGoalResponse:
        command_context, command = self._parse(
            context, request.context, lambda ctx: translate.revise_goal(request, ctx)
        )
        outcome = await self._run(principal_of(context), command_context, command)
        return planning_pb2.ReviseGoalResponse(
            result=self._result(command, outcome), plan_version=outcome.plan_version
        )

    @refusals_as_status
    async def AchieveGoal(
        self, request: planning_pb2.AchieveGoalRequest, context: Context
    ) -> planning_pb2.AchieveGoalResponse:
        command_context, command = self._parse(
            context, request.context, lambda _: translate.achieve_goal(request)
        )
        outcome = await self._run(principal_of(context), command_context, command)
        return planning_pb2.AchieveGoalResponse(result=self._result(command, outcome))

    @refusals_as_status
    async def DropGoal(
        self, request: planning_pb2.DropGoalRequest, context: Context
    ) -> planning_pb2.DropGoalResponse:
        command_context, command = self._parse(
            context, request.context, lambda _: translate.drop_goal(request)
        )
        outcome = await self._run(principal_of(context), command_context, command)
        return planning_pb2.DropGoalResponse(
            result=self._result(command, outcome), plan_version=outcome.plan_version
        )

    @refusals_as_status
    async def RecordAgreement(
        self,
        request: planning_pb2.RecordAgreementRequest,
        context: Context,
    ) -> planning_pb2.RecordAgreementResponse:
        command_context, command = self._parse(
            context, request.context, lambda _: translate.record_agreement(request)
        )
        outcome = await self._run(principal_of(context), command_context, command)
        agreed = _first(outcome, PlanAgreed)
        return planning_pb2.RecordAgreementResponse(
            result=self._result(command, outcome),
            # The version agreed, the current one: the event numbers the agreement.
            plan_version=outcome.plan_version,
            goal_ids=() if agreed is None else agreed.goal_ids,
        )

    @refusals_as_status
    async def LogContact(
        self, request: planning_pb2.LogContactRequest, context: Context
    ) -> planning_pb2.LogContactResponse:
        command_context, command, earlier = await self._parse_timely(
            context,
            request.context,
            lambda ctx, timely: translate.log_contact(request, ctx, self._day(ctx, timely)),
        )
        outcome = await self._run(principal_of(context), command_context, command, earlier)
        logged = _first(outcome, ContactLogged)
        return planning_pb2.LogContactResponse(
            result=self._result(command, outcome),
            contact_id=command.contact_id if logged is None else logged.contact_id,
        )

    @refusals_as_status
    async def EvaluateProgress(
        self,
        request: planning_pb2.EvaluateProgressRequest,
        context: Context,
    ) -> planning_pb2.EvaluateProgressResponse:
        command_context, command = self._parse(
            context, request.context, lambda ctx: translate.evaluate_progress(request, ctx)
        )
        outcome = await self._run(principal_of(context), command_context, command)
        evaluated = _first(outcome, ProgressEvaluated)
        return planning_pb2.EvaluateProgressResponse(
            result=self._result(command, outcome),
            evaluation_id=command.evaluation_id if evaluated is None else evaluated.evaluation_id,
        )

    @refusals_as_status
    async def PlanDischarge(
        self,
        request: planning_pb2.PlanDischargeRequest,
        context: Context,
    ) -> planning_pb2.PlanDischargeResponse:
        command_context, command, earlier = await self._parse_timely(
            context,
            request.context,
            lambda ctx, timely: translate.plan_discharge(request, self._day(ctx, timely)),
        )
        outcome = await self._run(principal_of(context), command_context, command, earlier)
        return planning_pb2.PlanDischargeResponse(result=self._result(command, outcome))

    @refusals_as_status
    async def CloseCase(
        self, request: planning_pb2.CloseCaseRequest, context: Context
    ) -> planning_pb2.CloseCaseResponse:
        command_context, command = self._parse(
            context, request.context, lambda _: translate.close_case(request)
        )
        case_id = command.case_id
        principal = principal_of(context)
        # Before the team is checked: the case may have moved to another team since the
        # first attempt, whose retry must get its answer again, not a new one's refusal.
        earlier = (
            await recorded_before(self._deps.store, SOURCE, command_context)
            if principal.role is Role.SUPERVISOR
            else None
        )
        if earlier is None:
            await self._access.require_supervision(
                principal,
                case_id,
                assignment_seen=await self._deps.views.assignment_seen(case_id),
            )
        outcome = await self._run(principal, command_context, command, earlier)
        return planning_pb2.CloseCaseResponse(result=self._result(command, outcome))

    @refusals_as_status
    async def GetCaseView(
        self, request: planning_pb2.GetCaseViewRequest, context: Context
    ) -> planning_pb2.GetCaseViewResponse:
        reader, case_id = read_query(
            principal_of(context), request.context, lambda: translate.case_id_of(request)
        )
        access = self._access
        principal = principal_of(context)
        document, decision = await queries.case_view(
            self._deps.views, access, principal, reader.purpose, case_id
        )
        view = present.case_view(document, special=decision.sensitive)
        disclosed = Disclosure(
            case_id,
            decision,
            view,
            CASE_VIEW_SENSITIVE_PATHS,
            CASE_VIEW_SECTIONS,
            section_paths=CASE_VIEW_SECTION_PATHS,
            referral_paths=CASE_VIEW_REFERRAL_PATHS,
            special_links={
                CASE_VIEW_REFERRAL_LINK: redaction.special_ids(
                    view, "referrals.need_category", "referral_id"
                ),
                CASE_VIEW_GOAL_LINK: frozenset().union(
                    *(
                        redaction.special_ids(view, goals, "goal.goal_id")
                        for goals in CASE_VIEW_SPECIAL_GOALS
                    )
                ),
            },
        )
        # Cut among what the caller may see: an entry withheld leaves no trace in the totals.
        disclosed.keep_readable(CASE_VIEW_SPECIAL_ENTRIES)
        present.cut_case_view(view)
        await access.release(context, principal, reader.purpose, [disclosed])
        return view

    @refusals_as_status
    async def ListCases(
        self, request: planning_pb2.ListCasesRequest, context: Context
    ) -> planning_pb2.ListCasesResponse:
        reader, (where, limit) = read_query(
            principal_of(context),
            request.context,
            lambda: translate.case_filter(request, agency_today(self._time_zone, self._clock())),
        )
        access = self._access
        principal = principal_of(context)
        listed, truncated = await queries.list_cases(
            self._deps.views, access, principal, reader.purpose, where, limit
        )
        answer = planning_pb2.ListCasesResponse(truncated=truncated)
        disclosures = []
        for document, decision in listed:
            summary = answer.cases.add()
            summary.CopyFrom(present.case_summary(document, special=decision.sensitive))
            disclosures.append(
                Disclosure(
                    summary.case_id,
                    decision,
                    summary,
                    SUMMARY_SENSITIVE_PATHS,
                    SUMMARY_SECTIONS,
                    section_paths=SUMMARY_SECTION_PATHS,
                )
            )
        await access.release(context, principal, reader.purpose, disclosures)
        return answer

    async def _run(
        self,
        principal: Principal,
        context: CommandContext,
        command: Command,
        earlier: list[RecordedEvent] | None = None,
    ) -> Outcome:
        # Asked only of a command whose refusal it tells, and not for a retry answered from
        # what it recorded (nothing is decided then).
        sensitive_shown = (
            earlier is None
            and isinstance(command, TOLD_AS_SHOWN)
            and (await self._answer_decision(principal, command.case_id)).sensitive
        )
        day = self._day(context, timely=True)
        # A command stating no moment happens on the clock its day is read on.
        moment_on_clock = replace(context, clock=self._clock)
        return await handle(
            self._deps,
            moment_on_clock,
            command,
            earlier=earlier,
            day=day,
            sensitive_shown=sensitive_shown,
        )

    async def _answer_decision(self, principal: Principal, case_id: str) -> Decision:
        """The policy's decision on what a command's answer tells its caller of the case's
        special data: a read of the case for the purpose their role acts on it under (a
        supervisor's supervision, the coordinator's and the case's worker's coordination), on
        the facts such a read is decided on (``reader_facts``: the case's worker's once they
        hold what the bus held of the case, so that a worker just given the case is not refused
        their own goal as unknown while the policy's facts trail the case view). A refusal
        names a service, referral or goal of special data, and a command finds such a goal,
        only when it discloses sensitive values (``decisions.decide``); a refused read
        discloses none."""
        purpose = (
            AccessPurpose.SUPERVISION
            if principal.role is Role.SUPERVISOR
            else AccessPurpose.COORDINATION
        )
        facts = await self._access.reader_facts(
            principal, PolicyAction.READ_CASE, purpose, case_id, subject=case_id
        )
        return self._access.decide(principal, PolicyAction.READ_CASE, purpose, facts)

    def _day(self, context: CommandContext, timely: bool) -> date | None:
        """The command's day: the agency's date at its stated moment, else on the server's
        clock (``None`` when the clock is not to be checked, ``read_timely_command``). UTC's
        date put an agency west of UTC a day ahead every evening: a follow-up due on its today
        refused as before the contact, a licence valid through its today (coordination's
        ``today``) refused for counseling."""
        if context.occurred_at is not None:
            return agency_today(self._time_zone, context.occurred_at)
        return agency_today(self._time_zone, self._clock()) if timely else None

    @staticmethod
    def _result(command: Command, outcome: Outcome) -> common_pb2.CommandResult:
        return present.command_result(command.case_id, outcome.recorded)


def _first(outcome: Outcome, kind: type[E]) -> E | None:
    for recorded in outcome.recorded:
        if isinstance(recorded.event, kind):
            return recorded.event
    return None
