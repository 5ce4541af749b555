"""The ``casetrail.planning.v1.Planning`` servicer: requests to commands, outcomes to responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import grpc

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from events.catalog.base import CaseEvent
from events.catalog.monitoring import ContactLogged, ProgressEvaluated
from events.catalog.planning import GoalAdded, PlanAgreed, PlanDrafted
from events.commands import CommandContext
from events.grpc_platform.context import command_context_from
from events.grpc_platform.server import refusals_as_status
from services.planning.app import queries
from services.planning.app.handlers import Dependencies, Outcome, handle
from services.planning.domain.commands import Command
from services.planning.entrypoints import present, translate

SERVICE_NAME = planning_pb2.DESCRIPTOR.services_by_name["Planning"].full_name

E = TypeVar("E", bound=CaseEvent)


class PlanningServicer(planning_pb2_grpc.PlanningServicer):
    def __init__(
        self, deps: Dependencies, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._deps = deps
        self._clock = clock

    @refusals_as_status
    async def DraftPlan(  # noqa: N802
        self, request: planning_pb2.DraftPlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.DraftPlanResponse:
        command_context = command_context_from(request.context)
        command = translate.draft_plan(request, command_context)
        outcome = await self._run(command_context, command)
        # A retry answers with what was recorded the first time, not with this request's ids.
        drafted = _first(outcome, PlanDrafted)
        goals = command.goals if drafted is None else drafted.goals
        return planning_pb2.DraftPlanResponse(
            result=self._result(command, outcome),
            plan_id=command.plan_id if drafted is None else drafted.plan_id,
            goal_ids=[goal.goal_id for goal in goals],
        )

    @refusals_as_status
    async def AddGoal(  # noqa: N802
        self, request: planning_pb2.AddGoalRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.AddGoalResponse:
        command_context = command_context_from(request.context)
        command = translate.add_goal(request, command_context)
        outcome = await self._run(command_context, command)
        added = _first(outcome, GoalAdded)
        return planning_pb2.AddGoalResponse(
            result=self._result(command, outcome),
            goal_id=(command.goal if added is None else added.goal).goal_id,
            plan_version=_plan_version(outcome),
        )

    @refusals_as_status
    async def ReviseGoal(  # noqa: N802
        self, request: planning_pb2.ReviseGoalRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.ReviseGoalResponse:
        command_context = command_context_from(request.context)
        command = translate.revise_goal(request, command_context)
        outcome = await self._run(command_context, command)
        return planning_pb2.ReviseGoalResponse(
            result=self._result(command, outcome), plan_version=_plan_version(outcome)
        )

    @refusals_as_status
    async def AchieveGoal(  # noqa: N802
        self, request: planning_pb2.AchieveGoalRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.AchieveGoalResponse:
        command_context = command_context_from(request.context)
        command = translate.achieve_goal(request)
        outcome = await self._run(command_context, command)
        return planning_pb2.AchieveGoalResponse(result=self._result(command, outcome))

    @refusals_as_status
    async def DropGoal(  # noqa: N802
        self, request: planning_pb2.DropGoalRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.DropGoalResponse:
        command_context = command_context_from(request.context)
        command = translate.drop_goal(request)
        outcome = await self._run(command_context, command)
        return planning_pb2.DropGoalResponse(
            result=self._result(command, outcome), plan_version=_plan_version(outcome)
        )

    @refusals_as_status
    async def RecordAgreement(  # noqa: N802
        self,
        request: planning_pb2.RecordAgreementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> planning_pb2.RecordAgreementResponse:
        command_context = command_context_from(request.context)
        command = translate.record_agreement(request)
        outcome = await self._run(command_context, command)
        agreed = _first(outcome, PlanAgreed)
        return planning_pb2.RecordAgreementResponse(
            result=self._result(command, outcome),
            plan_version=_plan_version(outcome) if agreed is None else agreed.plan_version,
            goal_ids=() if agreed is None else agreed.goal_ids,
        )

    @refusals_as_status
    async def LogContact(  # noqa: N802
        self, request: planning_pb2.LogContactRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.LogContactResponse:
        command_context = command_context_from(request.context)
        command = translate.log_contact(request, command_context, self._day(command_context))
        outcome = await self._run(command_context, command)
        logged = _first(outcome, ContactLogged)
        return planning_pb2.LogContactResponse(
            result=self._result(command, outcome),
            contact_id=command.contact_id if logged is None else logged.contact_id,
        )

    @refusals_as_status
    async def EvaluateProgress(  # noqa: N802
        self,
        request: planning_pb2.EvaluateProgressRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> planning_pb2.EvaluateProgressResponse:
        command_context = command_context_from(request.context)
        command = translate.evaluate_progress(request, command_context)
        outcome = await self._run(command_context, command)
        evaluated = _first(outcome, ProgressEvaluated)
        return planning_pb2.EvaluateProgressResponse(
            result=self._result(command, outcome),
            evaluation_id=command.evaluation_id if evaluated is None else evaluated.evaluation_id,
        )

    @refusals_as_status
    async def PlanDischarge(  # noqa: N802
        self,
        request: planning_pb2.PlanDischargeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> planning_pb2.PlanDischargeResponse:
        command_context = command_context_from(request.context)
        command = translate.plan_discharge(request, self._day(command_context))
        outcome = await self._run(command_context, command)
        return planning_pb2.PlanDischargeResponse(result=self._result(command, outcome))

    @refusals_as_status
    async def CloseCase(  # noqa: N802
        self, request: planning_pb2.CloseCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.CloseCaseResponse:
        command_context = command_context_from(request.context)
        command = translate.close_case(request)
        outcome = await self._run(command_context, command)
        return planning_pb2.CloseCaseResponse(result=self._result(command, outcome))

    @refusals_as_status
    async def GetCaseView(  # noqa: N802
        self, request: planning_pb2.GetCaseViewRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.CaseView:
        actor, _ = translate.query_context(request.context)
        document = await queries.case_view(self._deps.views, actor, translate.case_id_of(request))
        return present.case_view(document)

    @refusals_as_status
    async def ListCases(  # noqa: N802
        self, request: planning_pb2.ListCasesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> planning_pb2.ListCasesResponse:
        actor, _ = translate.query_context(request.context)
        where, limit = translate.case_filter(request, self._clock().date())
        documents, truncated = await queries.list_cases(self._deps.views, actor, where, limit)
        return planning_pb2.ListCasesResponse(
            cases=[present.case_summary(document) for document in documents], truncated=truncated
        )

    async def _run(self, context: CommandContext, command: Command) -> Outcome:
        return await handle(self._deps, context, command)

    def _day(self, context: CommandContext) -> date:
        return (context.occurred_at or self._clock()).date()

    @staticmethod
    def _result(command: Command, outcome: Outcome) -> common_pb2.CommandResult:
        return present.command_result(command.case_id, outcome.recorded)


def _first(outcome: Outcome, kind: type[E]) -> E | None:
    for recorded in outcome.recorded:
        if isinstance(recorded.event, kind):
            return recorded.event
    return None


def _plan_version(outcome: Outcome) -> int:
    plan = outcome.state.plan
    return 0 if plan is None else plan.version
