"""The casetrail.intake.v1.IntakeService servicer: requests to handlers, results to responses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from typing_extensions import override

from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.ages import agency_today
from casetrail_platform.commands import CommandContext, RuleBroken, required_id
from casetrail_platform.decide import Published, published_at_once, recorded_before
from casetrail_platform.grpc_platform.context import (
    read_command,
    read_query,
    read_timely_command,
)
from casetrail_platform.grpc_platform.errors import status_for
from casetrail_platform.grpc_platform.server import Context, refusals_as_status
from casetrail_platform.identity.grpc_auth import principal_of
from casetrail_platform.identity.principal import Principal
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.locking.port import Locks
from casetrail_platform.policy.guard import AccessControl, Disclosure
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.store.port import EventStore
from events.catalog.access import RecordSection
from events.catalog.base import Role
from events.catalog.emergency import EmergencyAccessOpened
from events.envelope import RecordedEvent
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.adapters.emergency_accesses import EmergencyAccessQueue
from services.intake.app import corrections, emergency, handlers, queries
from services.intake.domain.emergency import DEFAULT_REVIEW_WITHIN
from services.intake.domain.errors import PossibleDuplicateClient
from services.intake.domain.matching import DuplicateCandidate
from services.intake.entrypoints import from_proto, to_proto

ERASURE_UNAVAILABLE = "ERASURE_UNAVAILABLE"

SERVICE_NAME = intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name

CASE_SENSITIVE_PATHS = (
    "record.presenting_needs.category",
    "record.presenting_needs.description",
    "record.assessments.factors.psychosocial",
    "record.assessments.factors.biological",
    "record.assessments.factors.psychological",
    "record.assessments.factors.cultural",
    "record.assessments.risks",
    "record.assessments.needs.category",
    "record.assessments.needs.description",
    "record.reopenings.reason",
)
"""Where the catalog's sensitive fields (events/schemas/catalog.json) show in GetCase."""
CASE_SECTION_PATHS = {
    RecordSection.IDENTITY: ("record.client",),
    # How the client came to the agency is part of the intake assessment, as the needs they
    # presented are (audit counts the case's opening as identity and assessment too).
    RecordSection.ASSESSMENT: (
        "record.referral_source",
        "record.presenting_needs",
        "record.assessments",
        "record.assessments_truncated",
        "record.assessments_total",
    ),
    RecordSection.DISCHARGE: (
        "record.closures",
        "record.closures_truncated",
        "record.closures_total",
        "record.reopenings",
        "record.reopenings_truncated",
        "record.reopenings_total",
    ),
}
"""Where the record's sections show in GetCase: a decision that leaves one undisclosed (a
partner agency's referred scope) clears it."""
EMERGENCY_ACCESS_SENSITIVE_PATHS = ("reason", "review.note")
"""Where the catalog's sensitive fields show in an ``EmergencyAccess`` of the review queue."""


@dataclass(frozen=True, slots=True)
class IntakeDeps:
    store: EventStore
    directory: ClientDirectory
    closures: ClosureLog
    access: AccessControl
    emergencies: EmergencyAccessQueue
    locks: Locks
    """Shared by every replica: an erasure holds ``handlers.client_cases_lock``, which the
    append of an opening of a case of its client holds shared (the store's, as its guard's)."""
    keyring: ClientKeyring | None = None
    """The clients' data keys (``None`` when sensitive fields are not sealed)."""
    today: Callable[[], date] = lambda: agency_today(UTC)
    """The agency's date (its time zone's, ``casetrail_platform.ages``): dates of birth and
    retention holds are checked on it."""
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    review_within: timedelta = DEFAULT_REVIEW_WITHIN
    """An emergency access not reviewed this long after it opened is overdue."""
    published: Published = published_at_once
    """Whether the bus has acknowledged the store's events up to a position, waiting a bounded
    time (``ServiceHost.published``): a consent, its revocation, a reopening and an emergency
    access's opening and closing are answered once it has them."""


class IntakeServicer(intake_pb2_grpc.IntakeServiceServicer):
    """Each request is read whole first (its context and the catalog event it asks for), so every
    bad field is refused at once; the handler then checks the role, builds the event again (it
    trusts no caller) and checks the rules and duplicates."""

    def __init__(self, deps: IntakeDeps) -> None:
        self._deps = deps

    async def _recorded_before(self, context: CommandContext) -> list[RecordedEvent] | None:
        return await recorded_before(self._deps.store, handlers.SOURCE, context)

    @override
    @refusals_as_status
    async def RegisterClient(
        self, request: intake_pb2.RegisterClientRequest, context: Context
    ) -> intake_pb2.RegisterClientResponse:
        deps = self._deps
        command = from_proto.register_client(request)
        today = deps.today()
        principal = principal_of(context)
        ctx, checked = read_command(
            principal,
            request.context,
            lambda ctx: handlers.registration_of(ctx, command, today),
            home_agency=self._deps.access.home_agency,
        )
        try:
            registration = await handlers.register_client(
                deps.store, deps.directory, ctx, command, today, checked
            )
        except PossibleDuplicateClient as error:
            raise await self._disclosed(principal, error) from None
        recorded = registration.recorded
        # The duplicates the caller said this person is not are people too: only those the
        # policy lets the caller see are named, each recorded (a refused one's refusal too).
        acknowledged, cut = await self._shown(
            principal, registration.acknowledged_duplicates, context
        )
        return intake_pb2.RegisterClientResponse(
            client_id=recorded.subject_id,
            version=recorded.version,
            event_ids=recorded.event_ids,
            acknowledged_duplicates=[to_proto.candidate(c) for c in acknowledged],
            acknowledged_duplicates_truncated=cut,
        )

    async def _shown(
        self,
        principal: Principal,
        candidates: Sequence[DuplicateCandidate],
        context: Context | None = None,
    ) -> tuple[list[DuplicateCandidate], bool]:
        """Of a registration's possible duplicates, those the policy lets the caller see, as
        many as the answer holds (and whether it held fewer), recorded before they are sent
        (decided and recorded as ``FindPossibleDuplicates`` does, under the purpose the matrix
        gives the caller's role: a registration states none); a refused one is left out and its
        refusal recorded."""
        if not candidates:
            return [], False
        access = self._deps.access
        purpose = queries.registration_purpose(principal.role)
        shown, disclosures, cut = await queries.disclosed_candidates(
            self._deps.store, access, principal, purpose, candidates, fits=to_proto.candidates_fit
        )
        await access.release(context, principal, purpose, disclosures, action=Action.READ_CLIENT)
        return shown, cut

    async def _disclosed(self, principal: Principal, error: PossibleDuplicateClient) -> Exception:
        """The refusal to send: the candidates the policy lets the caller see, as many as its
        trailer holds (in registration order; at least one), recorded before they are sent (a
        registration's refusal discloses that they are clients and why they match, no personal
        value: the fields recorded are those it shows). Those that do not fit are neither sent
        nor recorded; the refusal says there are more."""
        access = self._deps.access
        purpose = queries.registration_purpose(principal.role)
        shown, disclosures, more = await queries.disclosed_candidates(
            self._deps.store,
            access,
            principal,
            purpose,
            error.candidates,
            queries.REFUSED_CANDIDATE_FIELDS,
            fits=_fits,
        )
        await access.release(None, principal, purpose, disclosures, action=Action.READ_CLIENT)
        if not shown:
            return RuleBroken(
                "POSSIBLE_DUPLICATE_CLIENT_WITHHELD",
                "the person may already be registered as a client you may not see: ask the"
                " agency that serves them",
            )
        return _duplicate_refusal(shown, more=more)

    @override
    @refusals_as_status
    async def OpenCase(
        self, request: intake_pb2.OpenCaseRequest, context: Context
    ) -> intake_pb2.OpenCaseResponse:
        command = from_proto.open_case(request)
        ctx, checked = read_command(
            principal_of(context),
            request.context,
            lambda ctx: handlers.opening_of(ctx, command),
            home_agency=self._deps.access.home_agency,
        )
        recorded = await handlers.open_case(self._deps.store, ctx, command, checked)
        return intake_pb2.OpenCaseResponse(result=to_proto.command_result(recorded))

    @override
    @refusals_as_status
    async def RecordInitialAssessment(
        self, request: intake_pb2.RecordInitialAssessmentRequest, context: Context
    ) -> intake_pb2.RecordInitialAssessmentResponse:
        command = from_proto.record_initial_assessment(request)
        principal = principal_of(context)
        deps = self._deps
        ctx, checked = read_command(
            principal,
            request.context,
            lambda ctx: handlers.assessment_of(ctx, command),
            home_agency=deps.access.home_agency,
        )
        recorded, assessment_id = await handlers.record_initial_assessment(
            deps.store, deps.closures, deps.access, principal, ctx, command, checked
        )
        return intake_pb2.RecordInitialAssessmentResponse(
            result=to_proto.command_result(recorded), assessment_id=assessment_id
        )

    @override
    @refusals_as_status
    async def ReopenCase(
        self, request: intake_pb2.ReopenCaseRequest, context: Context
    ) -> intake_pb2.ReopenCaseResponse:
        command = from_proto.reopen_case(request)
        ctx, _ = read_command(
            principal_of(context),
            request.context,
            lambda _: handlers.reopening_of(command),
            home_agency=self._deps.access.home_agency,
        )
        principal = principal_of(context)
        deps = self._deps
        if principal.role is Role.SUPERVISOR:
            earlier = await handlers.reopened_before(deps.store, ctx, deps.published)
            if earlier is not None:
                return intake_pb2.ReopenCaseResponse(result=to_proto.command_result(earlier))
        # The team as the bus has brought it: intake keeps no other copy of the case's
        # assignments to tell a transfer on its way (README, "A transfer not delivered yet").
        await deps.access.require_supervision(principal, command.case_id)
        recorded = await handlers.reopen_case(
            deps.store, deps.closures, ctx, command, deps.published
        )
        return intake_pb2.ReopenCaseResponse(result=to_proto.command_result(recorded))

    @override
    @refusals_as_status
    async def GrantConsent(
        self, request: intake_pb2.GrantConsentRequest, context: Context
    ) -> intake_pb2.GrantConsentResponse:
        command = from_proto.grant_consent(request)
        now = self._deps.clock()
        deps = self._deps
        principal = principal_of(context)
        # Checked whole first (the case's client is filled in by the handler).
        ctx, _, earlier = await read_timely_command(
            principal,
            request.context,
            lambda ctx, timely: handlers.consent_of(
                ctx, command, handlers.UNCHECKED_CLIENT, now if timely else None
            ),
            self._recorded_before,
            home_agency=deps.access.home_agency,
        )
        recorded, consent_id = await handlers.grant_consent(
            deps.store,
            deps.closures,
            deps.access,
            principal,
            ctx,
            command,
            None if earlier else now,
            deps.published,
        )
        return intake_pb2.GrantConsentResponse(
            result=to_proto.command_result(recorded), consent_id=consent_id
        )

    @override
    @refusals_as_status
    async def RevokeConsent(
        self, request: intake_pb2.RevokeConsentRequest, context: Context
    ) -> intake_pb2.RevokeConsentResponse:
        command = from_proto.revoke_consent(request)
        principal = principal_of(context)
        ctx, _ = read_command(
            principal,
            request.context,
            lambda _: (
                required_id("case_id", command.case_id),
                required_id("consent_id", command.consent_id),
                handlers.revocation_of(command, handlers.UNCHECKED_CLIENT),
            ),
            home_agency=self._deps.access.home_agency,
        )
        deps = self._deps
        recorded = await handlers.revoke_consent(
            deps.store, deps.closures, deps.access, principal, ctx, command, deps.published
        )
        return intake_pb2.RevokeConsentResponse(result=to_proto.command_result(recorded))

    @override
    @refusals_as_status
    async def EraseClient(
        self, request: intake_pb2.EraseClientRequest, context: Context
    ) -> intake_pb2.EraseClientResponse:
        command = from_proto.erase_client(request)
        ctx, _ = read_command(
            principal_of(context),
            request.context,
            lambda _: (
                required_id("client_id", command.client_id),
                handlers.erasure_of(command),
            ),
            home_agency=self._deps.access.home_agency,
        )
        erasure = await handlers.erase_client(
            self._deps.store,
            self._deps.locks,
            self._keyring(),
            ctx,
            command,
            self._deps.today(),
        )
        return intake_pb2.EraseClientResponse(
            result=to_proto.command_result(erasure.recorded),
            erased_case_ids=erasure.case_ids,
            keys_destroyed=erasure.keys_destroyed,
        )

    @override
    @refusals_as_status
    async def PlaceRetentionHold(
        self, request: intake_pb2.PlaceRetentionHoldRequest, context: Context
    ) -> intake_pb2.PlaceRetentionHoldResponse:
        command = from_proto.place_retention_hold(request)
        today = self._deps.today()
        ctx, _, earlier = await read_timely_command(
            principal_of(context),
            request.context,
            lambda ctx, timely: handlers.hold_of(ctx, command, today if timely else None),
            self._recorded_before,
            home_agency=self._deps.access.home_agency,
        )
        recorded, hold_id = await handlers.place_retention_hold(
            self._deps.store, ctx, command, None if earlier else today
        )
        return intake_pb2.PlaceRetentionHoldResponse(
            result=to_proto.command_result(recorded), hold_id=hold_id
        )

    @override
    @refusals_as_status
    async def ReleaseRetentionHold(
        self, request: intake_pb2.ReleaseRetentionHoldRequest, context: Context
    ) -> intake_pb2.ReleaseRetentionHoldResponse:
        command = from_proto.release_retention_hold(request)
        ctx, _ = read_command(
            principal_of(context),
            request.context,
            lambda _: (
                required_id("client_id", command.client_id),
                required_id("hold_id", command.hold_id),
                handlers.release_of(command),
            ),
            home_agency=self._deps.access.home_agency,
        )
        recorded = await handlers.release_retention_hold(self._deps.store, ctx, command)
        return intake_pb2.ReleaseRetentionHoldResponse(result=to_proto.command_result(recorded))

    @override
    @refusals_as_status
    async def CorrectClientDateOfBirth(
        self, request: intake_pb2.CorrectClientDateOfBirthRequest, context: Context
    ) -> intake_pb2.CorrectClientDateOfBirthResponse:
        deps = self._deps
        command = from_proto.correct_client_date_of_birth(request)
        today = deps.today()
        principal = principal_of(context)
        ctx, _ = read_command(
            principal,
            request.context,
            lambda _: (
                required_id("client_id", command.client_id),
                corrections.correction_of(command, today),
            ),
            home_agency=deps.access.home_agency,
        )
        recorded = await corrections.correct_date_of_birth(
            deps.store, deps.directory, deps.closures, deps.access, principal, ctx, command, today
        )
        return intake_pb2.CorrectClientDateOfBirthResponse(result=to_proto.command_result(recorded))

    def _keyring(self) -> ClientKeyring:
        keyring = self._deps.keyring
        if keyring is None:
            raise RuleBroken(
                ERASURE_UNAVAILABLE,
                "sensitive fields are not sealed with per-client keys here, so nothing can be"
                " erased by destroying keys",
            )
        return keyring

    @override
    @refusals_as_status
    async def GetClient(
        self, request: intake_pb2.GetClientRequest, context: Context
    ) -> intake_pb2.GetClientResponse:
        reader, client_id = read_query(
            principal_of(context),
            request.context,
            lambda: required_id("client_id", request.client_id),
        )
        access = self._deps.access
        principal = principal_of(context)
        # A role that may never read a client learns nothing, not even whether one exists.
        await access.require_role(principal, Action.READ_CLIENT, reader.purpose, client_id)
        # Decided before the client is looked up: an unknown id and a real one refused alike.
        allowing = await queries.client_decisions(
            self._deps.store, access, principal, reader.purpose, client_id
        )
        record = await queries.get_client(self._deps.store, client_id)
        response = intake_pb2.GetClientResponse(client=to_proto.client(record))
        # Showing who a client is shows part of each of their cases: each case allowing it
        # records the read under its own decision.
        disclosures = [
            Disclosure(case_id, decision, response, (), queries.CLIENT_SECTIONS)
            for case_id, decision in allowing
        ]
        await access.release(
            context, principal, reader.purpose, disclosures, action=Action.READ_CLIENT
        )
        return response

    @override
    @refusals_as_status
    async def FindPossibleDuplicates(
        self, request: intake_pb2.FindPossibleDuplicatesRequest, context: Context
    ) -> intake_pb2.FindPossibleDuplicatesResponse:
        query = from_proto.find_duplicates(request)
        reader, _ = read_query(
            principal_of(context), request.context, lambda: queries.probe_from(query)
        )
        access = self._deps.access
        principal = principal_of(context)
        found, disclosures, truncated = await queries.find_possible_duplicates(
            self._deps.store,
            self._deps.directory,
            access,
            principal,
            reader,
            query,
            fits=to_proto.candidates_fit,
        )
        response = intake_pb2.FindPossibleDuplicatesResponse(
            candidates=[to_proto.candidate(c) for c in found], truncated=truncated
        )
        await access.release(
            context, principal, reader.purpose, disclosures, action=Action.READ_CLIENT
        )
        return response

    @override
    @refusals_as_status
    async def GetCase(
        self, request: intake_pb2.GetCaseRequest, context: Context
    ) -> intake_pb2.GetCaseResponse:
        reader, case_id = read_query(
            principal_of(context),
            request.context,
            lambda: required_id("case_id", request.case_id),
        )
        access = self._deps.access
        principal = principal_of(context)
        # A role that may never read a case learns nothing, not even whether it exists.
        await access.require_role(principal, Action.READ_CASE, reader.purpose, case_id)
        view, decision = await queries.get_case(
            self._deps.store, self._deps.closures, access, principal, reader.purpose, case_id
        )
        response = intake_pb2.GetCaseResponse(record=to_proto.case_record(view))
        await access.release(
            context,
            principal,
            reader.purpose,
            [
                Disclosure(
                    case_id,
                    decision,
                    response,
                    CASE_SENSITIVE_PATHS,
                    queries.CASE_SECTIONS,
                    section_paths=CASE_SECTION_PATHS,
                )
            ],
        )
        return response

    @override
    @refusals_as_status
    async def OpenEmergencyAccess(
        self, request: intake_pb2.OpenEmergencyAccessRequest, context: Context
    ) -> intake_pb2.OpenEmergencyAccessResponse:
        deps = self._deps
        command = from_proto.open_emergency_access(request)
        principal = principal_of(context)
        now = deps.clock()
        ctx, _ = read_command(
            principal,
            request.context,
            lambda ctx: emergency.opening_of(ctx, principal, command, now),
            home_agency=None,
        )
        opened = await emergency.open_emergency_access(
            deps.store, deps.closures, deps.access, ctx, principal, command, now, deps.published
        )
        granted: EmergencyAccessOpened = opened.access
        return intake_pb2.OpenEmergencyAccessResponse(
            result=to_proto.command_result(opened.recorded),
            emergency_access_id=granted.emergency_access_id,
            opened_at=to_proto.timestamp(granted.opened_at),
            expires_at=to_proto.timestamp(granted.expires_at),
        )

    @override
    @refusals_as_status
    async def ReviewEmergencyAccess(
        self, request: intake_pb2.ReviewEmergencyAccessRequest, context: Context
    ) -> intake_pb2.ReviewEmergencyAccessResponse:
        command = from_proto.review_emergency_access(request)
        principal = principal_of(context)
        ctx, _ = read_command(
            principal,
            request.context,
            lambda ctx: emergency.review_of(ctx, command),
            home_agency=None,
        )
        deps = self._deps
        recorded = await emergency.review_emergency_access(
            deps.store, deps.closures, deps.access, ctx, principal, command
        )
        return intake_pb2.ReviewEmergencyAccessResponse(result=to_proto.command_result(recorded))

    @override
    @refusals_as_status
    async def CloseEmergencyAccess(
        self, request: intake_pb2.CloseEmergencyAccessRequest, context: Context
    ) -> intake_pb2.CloseEmergencyAccessResponse:
        deps = self._deps
        command = from_proto.close_emergency_access(request)
        principal = principal_of(context)
        now = deps.clock()
        ctx, _ = read_command(
            principal,
            request.context,
            lambda ctx: emergency.closing_of(ctx, principal, command, now),
            home_agency=None,
        )
        closed = await emergency.close_emergency_access(
            deps.store, deps.closures, deps.access, ctx, principal, command, now, deps.published
        )
        return intake_pb2.CloseEmergencyAccessResponse(
            result=to_proto.command_result(closed.recorded),
            closed_at=to_proto.timestamp(closed.closing.closed_at),
        )

    @override
    @refusals_as_status
    async def ListEmergencyAccesses(
        self, request: intake_pb2.ListEmergencyAccessesRequest, context: Context
    ) -> intake_pb2.ListEmergencyAccessesResponse:
        deps = self._deps
        query = from_proto.list_emergency_accesses(request)
        principal = principal_of(context)
        reader, _ = read_query(
            principal,
            request.context,
            lambda: query.case_id is None or required_id("case_id", query.case_id),
        )
        items, truncated = await emergency.review_queue(
            deps.emergencies,
            deps.access,
            principal,
            reader.purpose,
            query,
            deps.clock(),
            deps.review_within,
        )
        answer = intake_pb2.ListEmergencyAccessesResponse(truncated=truncated)
        disclosures = []
        for item in items:
            shown = answer.accesses.add()
            shown.CopyFrom(to_proto.emergency_access(item))
            disclosures.append(
                Disclosure(
                    item.entry.case_id,
                    item.decision,
                    shown,
                    EMERGENCY_ACCESS_SENSITIVE_PATHS,
                    (RecordSection.ACCESS_LOG,),
                )
            )
        await deps.access.release(context, principal, reader.purpose, disclosures)
        return answer


def _duplicate_refusal(
    candidates: Sequence[DuplicateCandidate], *, more: bool = False
) -> PossibleDuplicateClient:
    refusal = PossibleDuplicateClient(candidates, more=more)
    refusal.extra_details = to_proto.duplicate_details(refusal)
    return refusal


def _fits(candidates: Sequence[DuplicateCandidate]) -> bool:
    """Whether a refusal naming ``candidates`` (and saying there are more) keeps all of its
    details within the bound every status keeps (``grpc_platform.errors.bounded`` drops what
    is over)."""
    refusal = _duplicate_refusal(candidates, more=True)
    whole = len(status_for(PossibleDuplicateClient(candidates)).details)
    return len(status_for(refusal).details) == whole + len(refusal.extra_details)
