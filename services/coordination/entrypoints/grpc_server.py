"""The casetrail.coordination.v1.CoordinationService servicer: requests to handlers, results to
responses. Refusals become statuses in ``refusals_as_status``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from typing import Protocol, TypeVar

from typing_extensions import override

from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail.coordination.v1 import coordination_pb2_grpc
from casetrail_platform.commands import CommandContext, required_id
from casetrail_platform.grpc_platform.context import query_context_from, read_command, read_query
from casetrail_platform.grpc_platform.server import Context, refusals_as_status
from casetrail_platform.identity.grpc_auth import principal_of
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy import redaction
from casetrail_platform.policy.decide import any_rule_for, refusal
from casetrail_platform.policy.facts import no_case_of
from casetrail_platform.policy.guard import (
    WITHHELD_SECTIONS_KEY,
    AccessControl,
    AccessDenied,
    Disclosure,
)
from casetrail_platform.policy.vocabulary import Action as PolicyAction
from casetrail_platform.policy.vocabulary import Decision
from casetrail_platform.queries import QueryContext
from events.catalog.access import AccessPurpose, RecordSection
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import CaseEvent, Role
from events.catalog.eligibility import EligibilityDetermined
from events.catalog.funding import BudgetReleased, BudgetReserved, InsuranceClaimFiled
from events.catalog.referrals import ReferralMade
from events.catalog.scheduling import ServiceScheduled
from events.envelope import RecordedEvent
from services.coordination.app import queries
from services.coordination.app.handlers import assignment, funding, referrals, scheduling
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain import commands, eligibility, permissions
from services.coordination.entrypoints import convert

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CoordinationService"].full_name

C = TypeVar("C", bound=commands.Command)
E = TypeVar("E", bound=CaseEvent)
M = TypeVar("M", pb.GetClientScheduleResponse, pb.GetBudgetLineResponse)


class _CommandRequest(Protocol):
    @property
    def context(self) -> common_pb2.CommandContext: ...


CASE_SENSITIVE_PATHS = ("needs", "referrals.need_category", "referrals.service", "services.kind")
"""Where the catalog's sensitive fields (events/schemas/catalog.json) show in coordination's
answers about a case."""
CASE_SECTIONS = (
    RecordSection.IDENTITY,
    RecordSection.ASSESSMENT,
    RecordSection.ASSIGNMENT,
    RecordSection.REFERRALS,
    RecordSection.SERVICES,
    RecordSection.ELIGIBILITY,
    RecordSection.FUNDING,
)
CASE_SECTION_PATHS = {
    RecordSection.ASSESSMENT: ("needs",),
    RecordSection.ASSIGNMENT: ("worker_id", "worker_role"),
    RecordSection.REFERRALS: ("referrals", "referrals_truncated", "referrals_total"),
    RecordSection.SERVICES: ("services", "services_truncated", "services_total"),
    RecordSection.ELIGIBILITY: ("eligibility", "eligibility_truncated", "eligibility_total"),
    RecordSection.FUNDING: ("claims", "claims_truncated", "claims_total"),
}
REFERRAL_PATHS = {"referrals": "referral_id", "services": "referral_id"}
"""Lists whose entries belong to a referral: a partner sees its referral's entries only."""
CASE_SPECIAL_ENTRIES = ("referrals.need_category", "services.kind")
"""The sensitive paths of a case's answer that withhold whole entries (of a special-data need
or kind), so that a caller not entitled to them is shown fewer (``redaction``)."""
REFERRAL_LINK = "services.referral_id"
"""Where a service names the referral it was booked from: cleared for a caller not entitled to
sensitive values when that referral is of a special-data need (``Disclosure.special_links``).
The referral is withheld whole, and its id, listed by no referral of the case's answer, or
missing from them when the schedule's is set beside it, could only be such a referral's."""
CLAIM_SERVICES = "claims.service_ids"
RESERVATION_SERVICE = "reservations.service_id"
"""Where a claim and a reservation name the services they are about: for a caller not entitled
to sensitive values, an entry naming one of a special-data kind is withheld whole as the service
is (``Disclosure.special_referrers``): an id the case's services do not list could only be such
a service's (addiction counseling)."""
SCHEDULE_SENSITIVE_PATHS = ("services.kind",)
SCHEDULE_SECTIONS = (RecordSection.IDENTITY, RecordSection.SERVICES)
BUDGET_SECTIONS = (RecordSection.FUNDING,)
BUDGET_SECTION_PATHS = {RecordSection.FUNDING: ("reservations",)}
"""A budget line's reservations: what the agency's money is committed to for each case."""
NEEDS_SECTIONS = (RecordSection.ASSESSMENT,)
ASSIGNED_PATHS = ("matched_needs",)
"""Where an assignment's answer shows the case's needs: a sensitive path (the sensitive
categories are withheld from those not entitled to them)."""
BUDGET_LINE = "budget-line"
"""Where a budget line refused outright is recorded: the refusal names no case (as planning's
refused lists are recorded under ``case-list``)."""
WORKERS = "workers"
"""Where a refused ``ListWorkers`` is recorded (the agency's staff: no case)."""
PROGRAMS = "programs"
"""Where a refused ``ListPrograms`` is recorded (the agency's programmes: no case)."""
ROLE_NOT_ALLOWED = refusal("role-not-allowed")
"""Coordination's own refusal of a role that may not read its records of the agency (its staff,
for SuggestWorkers and ListWorkers, whatever the policy would let read of the case; its
programmes; its budget lines: ``permissions.Action.READ``), in the policy's words so that it
is recorded alike."""


class CoordinationServicer(coordination_pb2_grpc.CoordinationServiceServicer):
    def __init__(self, deps: Dependencies, access: AccessControl) -> None:
        self._deps = deps
        self._access = access

    def _parse(
        self, principal: Principal, request: _CommandRequest, model: type[C]
    ) -> tuple[CommandContext, C]:
        """The command context and the command, refusing every bad field of both at once (and
        first a caller from another agency than a partner: ``read_command``)."""
        return read_command(
            principal,
            request.context,
            lambda _: convert.command(model, request),  # type: ignore[arg-type]
            home_agency=self._access.home_agency,
        )

    async def _authorized(
        self,
        principal: Principal,
        reader: QueryContext,
        action: PolicyAction,
        case_id: str,
        *,
        staff_only: bool = False,
    ) -> Decision:
        """The policy's decision on ``action`` for the case, taken before the case is looked
        up: a role no rule lets do it is refused first, then a caller without the relationship,
        each refusal recorded; the answer never tells an unknown case from a refused one.
        ``staff_only``: the answer also shows the agency's staff and their caseloads, which
        coordination shows its own readers only (``permissions.Action.READ``)."""
        await self._require_reader(principal, reader.purpose, action, case_id, staff_only)
        facts = await self._access.reader_facts(
            principal, action, reader.purpose, case_id, subject=case_id
        )
        return await self._access.authorize(principal, action, reader.purpose, facts)

    async def _require_reader(
        self,
        principal: Principal,
        purpose: AccessPurpose,
        action: PolicyAction,
        subject: str,
        staff_only: bool,
    ) -> None:
        """Refuse, recorded under ``subject``, a role no rule lets do ``action`` for
        ``purpose`` and, with ``staff_only``, a caller of another agency (the agency's staff
        are its own to read: ``require_agency_reader``) or a role coordination does not show
        its records to (``permissions.Action.READ``): before anything is looked up."""
        if staff_only:
            await self._access.require_agency_reader(principal, action, purpose, subject)
        await self._access.require_role(principal, action, purpose, subject)
        if staff_only:
            await self._require_coordination_reader(principal, purpose, action, subject)

    async def _require_coordination_reader(
        self,
        principal: Principal,
        purpose: AccessPurpose,
        action: PolicyAction,
        subject: str,
    ) -> None:
        """Refuse ``ROLE_NOT_ALLOWED``, recorded under ``subject``, a role coordination does
        not show its records to (``permissions.Action.READ``: the agency's staff, programmes
        and budget lines), before anything is read: a refusal by role is on the record as the
        policy's are."""
        if not permissions.allows(principal.role, permissions.Action.READ):
            await self._access.refuse(principal, action, purpose, subject, ROLE_NOT_ALLOWED)

    # -- assignment -------------------------------------------------------------------------

    @override
    @refusals_as_status
    async def AssignCase(
        self, request: pb.AssignCaseRequest, context: Context
    ) -> pb.AssignCaseResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.AssignCase)
        recorded = await assignment.assign_case(self._deps, ctx, command, principal, self._access)
        assigned = _event(recorded, CaseAssigned)
        answer = pb.AssignCaseResponse(
            result=convert.result(command.case_id, recorded),
            matched_needs=[need.value for need in assigned.matched_needs],
        )
        # The matched needs are the case's assessment: the answer shows them as a read for
        # coordination would, decided and recorded (sensitive ones only to those entitled). A
        # caller the policy would not let read them still assigned the case; the answer then
        # withholds them and says so, and records nothing, since it discloses nothing.
        decision = await assignment.answer_decision(self._access, principal, command.case_id)
        if not decision.allowed:
            redaction.withhold(answer, ASSIGNED_PATHS)
            withheld = ((WITHHELD_SECTIONS_KEY, RecordSection.ASSESSMENT.value),)
            context.set_trailing_metadata(withheld)
            return answer
        disclosed = Disclosure(
            command.case_id,
            decision,
            answer,
            ASSIGNED_PATHS,
            NEEDS_SECTIONS,
            section_paths={RecordSection.ASSESSMENT: ASSIGNED_PATHS},
        )
        await self._access.release(context, principal, AccessPurpose.COORDINATION, [disclosed])
        return answer

    @override
    @refusals_as_status
    async def TransferCase(
        self, request: pb.TransferCaseRequest, context: Context
    ) -> pb.TransferCaseResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.TransferCase)
        # A supervisor acts on the cases of their team only, as when closing or reopening one:
        # the team coordination's own case stream records (handlers.carriers.CaseSupervisor).
        recorded = await assignment.transfer_case(self._deps, ctx, command, principal, self._access)
        return pb.TransferCaseResponse(
            result=convert.result(command.case_id, recorded),
            previous_worker_id=_event(recorded, CaseReassigned).previous_worker_id,
        )

    @override
    @refusals_as_status
    async def SuggestWorkers(
        self, request: pb.SuggestWorkersRequest, context: Context
    ) -> pb.SuggestWorkersResponse:
        principal = principal_of(context)
        reader, case_id = read_query(
            principal, request.context, lambda: required_id("case_id", request.case_id)
        )
        decision = await self._authorized(
            principal, reader, PolicyAction.READ_CASE, case_id, staff_only=True
        )
        needs, fits = await queries.suggest_workers(
            self._deps, case_id, self._deps.today(), sensitive_shown=decision.sensitive
        )
        answer = pb.SuggestWorkersResponse(
            needs=[need.value for need in needs],
            workers=[
                pb.WorkerFit(
                    worker=convert.worker(fit.worker, fit.caseload),
                    fits=not fit.refusals,
                    reasons=[f"{r.rule}: {r.description}" for r in fit.refusals],
                )
                for fit in fits
            ],
        )
        disclosed = Disclosure(
            case_id,
            decision,
            answer,
            ("needs",),
            NEEDS_SECTIONS,
            section_paths={RecordSection.ASSESSMENT: ("needs",)},
        )
        await self._access.release(context, principal, reader.purpose, [disclosed])
        return answer

    @override
    @refusals_as_status
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: Context
    ) -> pb.ListWorkersResponse:
        principal = principal_of(context)
        reader = query_context_from(principal, request.context)
        # The staff with their caseloads and credentials: the agency's own, not another's.
        await self._access.require_agency_reader(
            principal, PolicyAction.READ_AGENCY, reader.purpose, WORKERS
        )
        await self._require_coordination_reader(
            principal, reader.purpose, PolicyAction.READ_AGENCY, WORKERS
        )
        loads = await queries.workers(self._deps)
        return pb.ListWorkersResponse(
            workers=[convert.worker(load.worker, load.caseload) for load in loads]
        )

    # -- referrals --------------------------------------------------------------------------

    @override
    @refusals_as_status
    async def MakeReferral(
        self, request: pb.MakeReferralRequest, context: Context
    ) -> pb.MakeReferralResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.MakeReferral)
        recorded = await referrals.make_referral(self._deps, ctx, command, principal, self._access)
        return pb.MakeReferralResponse(
            result=convert.result(command.case_id, recorded),
            referral_id=_event(recorded, ReferralMade).referral_id,
        )

    @override
    @refusals_as_status
    async def AcceptReferral(
        self, request: pb.AcceptReferralRequest, context: Context
    ) -> pb.AcceptReferralResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.AcceptReferral)
        recorded = await referrals.answer_referral(self._deps, ctx, command, acting_for(principal))
        return pb.AcceptReferralResponse(result=convert.result(command.case_id, recorded))

    @override
    @refusals_as_status
    async def DeclineReferral(
        self, request: pb.DeclineReferralRequest, context: Context
    ) -> pb.DeclineReferralResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.DeclineReferral)
        recorded = await referrals.answer_referral(self._deps, ctx, command, acting_for(principal))
        return pb.DeclineReferralResponse(result=convert.result(command.case_id, recorded))

    @override
    @refusals_as_status
    async def CompleteReferral(
        self, request: pb.CompleteReferralRequest, context: Context
    ) -> pb.CompleteReferralResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.CompleteReferral)
        recorded = await referrals.answer_referral(self._deps, ctx, command, acting_for(principal))
        return pb.CompleteReferralResponse(result=convert.result(command.case_id, recorded))

    @override
    @refusals_as_status
    async def WithdrawReferral(
        self, request: pb.WithdrawReferralRequest, context: Context
    ) -> pb.WithdrawReferralResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.WithdrawReferral)
        recorded = await referrals.withdraw_referral(
            self._deps, ctx, command, principal, self._access
        )
        return pb.WithdrawReferralResponse(result=convert.result(command.case_id, recorded))

    # -- scheduling -------------------------------------------------------------------------

    @override
    @refusals_as_status
    async def ScheduleService(
        self, request: pb.ScheduleServiceRequest, context: Context
    ) -> pb.ScheduleServiceResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.ScheduleService)
        recorded = await scheduling.schedule_service(
            self._deps, ctx, command, principal, self._access
        )
        # No client_id (left empty): the client's id is client data, and a command's answer
        # records no access; the caller named the case, and reads of it tell the client.
        return pb.ScheduleServiceResponse(
            result=convert.result(command.case_id, recorded),
            service_id=_event(recorded, ServiceScheduled).service_id,
        )

    @override
    @refusals_as_status
    async def RescheduleService(
        self, request: pb.RescheduleServiceRequest, context: Context
    ) -> pb.RescheduleServiceResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.RescheduleService)
        recorded = await scheduling.reschedule_service(
            self._deps, ctx, command, principal, self._access
        )
        return pb.RescheduleServiceResponse(result=convert.result(command.case_id, recorded))

    @override
    @refusals_as_status
    async def CancelService(
        self, request: pb.CancelServiceRequest, context: Context
    ) -> pb.CancelServiceResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.CancelService)
        recorded = await scheduling.cancel_service(self._deps, ctx, command, acting_for(principal))
        return pb.CancelServiceResponse(result=convert.result(command.case_id, recorded))

    @override
    @refusals_as_status
    async def RecordServiceDelivered(
        self, request: pb.RecordServiceDeliveredRequest, context: Context
    ) -> pb.RecordServiceDeliveredResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.RecordServiceDelivered)
        recorded = await scheduling.record_service_delivered(
            self._deps, ctx, command, principal, self._access, acting_for(principal)
        )
        return pb.RecordServiceDeliveredResponse(result=convert.result(command.case_id, recorded))

    @override
    @refusals_as_status
    async def GetClientSchedule(
        self, request: pb.GetClientScheduleRequest, context: Context
    ) -> pb.GetClientScheduleResponse:
        principal = principal_of(context)
        reader, client_id = read_query(
            principal, request.context, lambda: required_id("client_id", request.client_id)
        )
        cases = await self._schedule_readable(principal, reader.purpose, client_id)
        services = await queries.schedule_of_client(self._deps, client_id, request.include_past)
        by_case = {case_id: pb.GetClientScheduleResponse() for case_id in cases}
        for service in services:
            by_case.setdefault(service.case_id, pb.GetClientScheduleResponse()).services.append(
                convert.service(service)
            )
        if not by_case:
            # Cases the policy's facts do not hold yet, which coordination knows of (the
            # worker it assigned a moment ago, whose assignment the facts' group has not
            # applied): decided case by case, at the facts' barrier, as any case listed;
            # refused as of no case, the worker was refused and the refusal recorded.
            known = await queries.cases_of_client(self._deps, client_id)
            by_case = {case_id: pb.GetClientScheduleResponse() for case_id in known}
        if not by_case:
            await self._no_case_readable(principal, reader.purpose, client_id)
        disclosures, refused = await self._readable_parts(
            principal,
            reader.purpose,
            client_id,
            by_case,
            lambda case_id, decision, part: Disclosure(
                case_id,
                decision,
                part,
                SCHEDULE_SENSITIVE_PATHS,
                SCHEDULE_SECTIONS,
                referral_paths={"services": "referral_id"},
            ),
        )
        if refused is not None and not disclosures:
            # The schedule is nothing but the cases' content: none readable, nothing to answer.
            raise AccessDenied(principal, PolicyAction.READ_CASE, refused)
        for index, item in enumerate(disclosures):
            if not item.decision.sensitive:
                special = await queries.special_referrals(self._deps, item.case_id)
                disclosures[index] = replace(item, special_links={REFERRAL_LINK: special})
        parts = []
        for item in disclosures:
            assert isinstance(item.message, pb.GetClientScheduleResponse)
            # ``truncated`` never counts a service withheld (a special-data one, from a caller
            # not entitled to it, who was told of more than they were shown).
            item.keep_readable(SCHEDULE_SENSITIVE_PATHS)
            parts.append(item.message)
        truncated = convert.cut_schedule(parts, convert.SCHEDULE_LISTED)
        await self._access.release(context, principal, reader.purpose, disclosures)
        answer = pb.GetClientScheduleResponse(truncated=truncated)
        for item in disclosures:
            answer.services.extend(item.message.services)  # type: ignore[union-attr]
        answer.services.sort(key=lambda s: (s.starts_at.seconds, s.starts_at.nanos))
        return answer

    async def _schedule_readable(
        self, principal: Principal, purpose: AccessPurpose, client_id: str
    ) -> list[str]:
        """The client's cases as the policy knows them, once the caller's role may read a case
        at all. The schedule shows what each case receives: case content, read case by case;
        a role no rule lets read a case (the front desk, which reads who a client is, never a
        case) is refused before the schedule is read, recorded under each of the client's cases
        (under the client's id when none is known)."""
        cases = await self._access.cases_of_client(client_id)
        if not any_rule_for(principal.role, PolicyAction.READ_CASE, purpose):
            refusal = self._access.decide(principal, PolicyAction.READ_CASE, purpose, None)
            await self._access.refuse_cases(
                principal, PolicyAction.READ_CASE, purpose, cases or [client_id], refusal
            )
        return cases

    async def _no_case_readable(
        self, principal: Principal, purpose: AccessPurpose, client_id: str
    ) -> None:
        """Refuse, recorded under the client's id, a caller who may not read a case of a
        client of whom none is known (``no_case_of``), as they are refused a real client's: an
        empty schedule is the answer to those who may read it only, or it would tell whether
        the client exists."""
        decision = self._access.decide(
            principal, PolicyAction.READ_CASE, purpose, no_case_of(client_id)
        )
        if not decision.allowed:
            await self._access.refuse(
                principal, PolicyAction.READ_CASE, purpose, client_id, decision
            )

    async def _readable_parts(
        self,
        principal: Principal,
        purpose: AccessPurpose,
        subject: str,
        by_case: Mapping[str, M],
        disclosure: Callable[[str, Decision, M], Disclosure],
    ) -> tuple[list[Disclosure], Decision | None]:
        """Each case's part of a list answer the policy lets the caller read, and the first
        refusal (``None`` when none). The cases refused are left out and each refusal recorded
        (``refuse_cases``: one append per decision, nearly always one); whether an answer whose
        every case is refused is refused too is the caller's to say. ``subject``: what the
        request asked about (the client, the budget line), which facts not caught up name:
        the cases were looked up for it and none is decided yet."""
        disclosures = []
        refused: dict[Decision, list[str]] = {}
        facts = await self._access.reader_facts_of(
            principal, PolicyAction.READ_CASE, purpose, list(by_case), subject=subject
        )
        for case_id, part in by_case.items():
            decision = self._access.decide(
                principal, PolicyAction.READ_CASE, purpose, facts[case_id]
            )
            if not decision.allowed:
                refused.setdefault(decision, []).append(case_id)
                continue
            disclosures.append(disclosure(case_id, decision, part))
        for decision, case_ids in refused.items():
            with suppress(AccessDenied):
                await self._access.refuse_cases(
                    principal, PolicyAction.READ_CASE, purpose, case_ids, decision
                )
        return disclosures, next(iter(refused), None)

    # -- eligibility ------------------------------------------------------------------------

    @override
    @refusals_as_status
    async def DetermineEligibility(
        self, request: pb.DetermineEligibilityRequest, context: Context
    ) -> pb.DetermineEligibilityResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.DetermineEligibility)
        recorded = await funding.determine_eligibility(
            self._deps, ctx, command, principal, self._access
        )
        decision = _event(recorded, EligibilityDetermined)
        return pb.DetermineEligibilityResponse(
            result=convert.result(command.case_id, recorded),
            eligible=decision.eligible,
            # Without an age taken from the client's record: a command's answer records no
            # access (the decision recorded holds it, and reads of the case show it, recorded).
            reasons=eligibility.reasons_told(decision, command.facts.age),
            valid_until=convert.day(decision.valid_until),
        )

    @override
    @refusals_as_status
    async def ListPrograms(
        self, request: pb.ListProgramsRequest, context: Context
    ) -> pb.ListProgramsResponse:
        principal = principal_of(context)
        reader = query_context_from(principal, request.context)
        await self._access.require_agency_reader(
            principal, PolicyAction.READ_AGENCY, reader.purpose, PROGRAMS
        )
        await self._require_coordination_reader(
            principal, reader.purpose, PolicyAction.READ_AGENCY, PROGRAMS
        )
        programs = queries.programs(self._deps)
        return pb.ListProgramsResponse(programs=[convert.program(p) for p in programs])

    # -- funding ----------------------------------------------------------------------------

    @override
    @refusals_as_status
    async def ReserveBudget(
        self, request: pb.ReserveBudgetRequest, context: Context
    ) -> pb.ReserveBudgetResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.ReserveBudget)
        # A supervisor commits the agency's money for their team's cases only, as they transfer,
        # close or reopen them (funding.reserve_budget).
        recorded = await funding.reserve_budget(self._deps, ctx, command, principal, self._access)
        return pb.ReserveBudgetResponse(
            result=convert.result(command.case_id, recorded),
            reservation_id=_event(recorded, BudgetReserved).reservation_id,
            available=await self._available(command.budget_line),
        )

    @override
    @refusals_as_status
    async def ReleaseBudget(
        self, request: pb.ReleaseBudgetRequest, context: Context
    ) -> pb.ReleaseBudgetResponse:
        principal = principal_of(context)
        ctx, command = self._parse(principal, request, commands.ReleaseBudget)
        # As ReserveBudget: a supervisor gives back money of their team's cases only.
        recorded = await funding.release_budget(self._deps, ctx, command, principal, self._access)
        _event(recorded, BudgetReleased)
        return pb.ReleaseBudgetResponse(
            result=convert.result(command.case_id, recorded),
            available=await self._available(command.budget_line),
        )

    @override
    @refusals_as_status
    async def GetBudgetLine(
        self, request: pb.GetBudgetLineRequest, context: Context
    ) -> pb.GetBudgetLineResponse:
        principal = principal_of(context)
        reader, line_id = read_query(
            principal, request.context, lambda: required_id("budget_line", request.budget_line)
        )
        # The line lists reservations of cases: a caller who may read none is refused, on the
        # record, before the line is looked up.
        await self._require_reader(
            principal, reader.purpose, PolicyAction.READ_CASE, BUDGET_LINE, staff_only=True
        )
        line, state = await queries.budget_line_state(
            self._deps, line_id, convert.RESERVATIONS_LISTED
        )
        answer = convert.budget_line(line, state)
        # Each reservation names its case, service and amount: case content, read case by case.
        # The line's own figures are the agency's and are answered whatever is withheld.
        by_case: dict[str, pb.GetBudgetLineResponse] = {}
        for reservation in answer.reservations:
            by_case.setdefault(reservation.case_id, pb.GetBudgetLineResponse()).reservations.append(
                reservation
            )
        disclosures, _ = await self._readable_parts(
            principal,
            reader.purpose,
            line_id,
            by_case,
            lambda case_id, decision, part: Disclosure(
                case_id,
                decision,
                part,
                (),
                BUDGET_SECTIONS,
                section_paths=BUDGET_SECTION_PATHS,
            ),
        )
        for index, item in enumerate(disclosures):
            if not item.decision.sensitive:
                special = await queries.special_services(self._deps, item.case_id)
                disclosures[index] = replace(item, special_referrers={RESERVATION_SERVICE: special})
        await self._access.release(context, principal, reader.purpose, disclosures)
        shown = {
            reservation.reservation_id
            for item in disclosures
            for reservation in item.message.reservations  # type: ignore[union-attr]
        }
        listed = [r for r in answer.reservations if r.reservation_id in shown]
        del answer.reservations[:]
        answer.reservations.extend(listed)
        return answer

    @override
    @refusals_as_status
    async def FileInsuranceClaim(
        self, request: pb.FileInsuranceClaimRequest, context: Context
    ) -> pb.FileInsuranceClaimResponse:
        ctx, command = self._parse(principal_of(context), request, commands.FileInsuranceClaim)
        recorded = await funding.file_insurance_claim(self._deps, ctx, command)
        return pb.FileInsuranceClaimResponse(
            result=convert.result(command.case_id, recorded),
            claim_id=_event(recorded, InsuranceClaimFiled).claim_id,
        )

    @override
    @refusals_as_status
    async def RecordClaimDecision(
        self, request: pb.RecordClaimDecisionRequest, context: Context
    ) -> pb.RecordClaimDecisionResponse:
        ctx, command = self._parse(principal_of(context), request, commands.RecordClaimDecision)
        recorded = await funding.record_claim_decision(self._deps, ctx, command)
        return pb.RecordClaimDecisionResponse(result=convert.result(command.case_id, recorded))

    # -- the case ---------------------------------------------------------------------------

    @override
    @refusals_as_status
    async def GetCaseCoordination(
        self, request: pb.GetCaseCoordinationRequest, context: Context
    ) -> pb.GetCaseCoordinationResponse:
        principal = principal_of(context)
        reader, case_id = read_query(
            principal, request.context, lambda: required_id("case_id", request.case_id)
        )
        decision = await self._authorized(principal, reader, PolicyAction.READ_CASE, case_id)
        view = await queries.case_coordination(self._deps, case_id)
        answer = convert.case_coordination(view)
        disclosed = Disclosure(
            case_id,
            decision,
            answer,
            CASE_SENSITIVE_PATHS,
            CASE_SECTIONS,
            section_paths=CASE_SECTION_PATHS,
            referral_paths=REFERRAL_PATHS,
            special_links={
                REFERRAL_LINK: redaction.special_ids(
                    answer, "referrals.need_category", "referral_id"
                )
            },
            special_referrers={
                CLAIM_SERVICES: redaction.special_ids(answer, "services.kind", "service_id")
            },
        )
        # Cut among what the caller may see: an entry withheld leaves no trace in the totals.
        disclosed.keep_readable(CASE_SPECIAL_ENTRIES)
        convert.cut_case_coordination(answer)
        await self._access.release(context, principal, reader.purpose, [disclosed])
        return answer

    async def _available(self, budget_line: str) -> pb.Money:
        line, state = await queries.budget_line_state(self._deps, budget_line)
        return convert.minor_units(
            line.amount.amount_minor_units - state.committed, line.amount.currency
        )


def acting_for(principal: Principal) -> str | None:
    """The provider a partner agency's caller acts as: its verified agency, never the provider
    a request names (``None`` for the agency's own staff)."""
    return principal.agency if principal.role is Role.PARTNER_AGENCY else None


def _event(recorded: list[RecordedEvent], model: type[E]) -> E:
    for event in recorded:
        if isinstance(event.event, model):
            return event.event
    raise LookupError(f"the command recorded no {model.event_type}")
