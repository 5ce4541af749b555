"""The casetrail.intake.v1.Intake servicer: requests to handlers, results to responses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import grpc
from grpc_status import rpc_status
from typing_extensions import override

from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from events.grpc_platform.context import command_context_from
from events.grpc_platform.server import refusals_as_status
from events.store.port import EventStore
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app import handlers, queries
from services.intake.domain.errors import PossibleDuplicateClient
from services.intake.entrypoints import from_proto, to_proto

SERVICE_NAME = intake_pb2.DESCRIPTOR.services_by_name["Intake"].full_name

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True, slots=True)
class IntakeDeps:
    store: EventStore
    directory: ClientDirectory
    closures: ClosureLog
    today: Callable[[], date] = utc_today


class IntakeServicer(intake_pb2_grpc.IntakeServicer):
    def __init__(self, deps: IntakeDeps) -> None:
        self._deps = deps

    @override
    @refusals_as_status
    async def RegisterClient(
        self, request: intake_pb2.RegisterClientRequest, context: Context
    ) -> intake_pb2.RegisterClientResponse:
        deps = self._deps
        try:
            registration = await handlers.register_client(
                deps.store,
                deps.directory,
                command_context_from(request.context),
                from_proto.register_client(request),
                deps.today(),
            )
        except PossibleDuplicateClient as error:
            await context.abort_with_status(rpc_status.to_status(to_proto.duplicate_status(error)))
            raise  # abort_with_status always raises; this keeps type checkers informed
        recorded = registration.recorded
        return intake_pb2.RegisterClientResponse(
            client_id=recorded.subject_id,
            version=recorded.version,
            event_ids=recorded.event_ids,
            acknowledged_duplicates=[
                to_proto.candidate(c) for c in registration.acknowledged_duplicates
            ],
        )

    @override
    @refusals_as_status
    async def OpenCase(
        self, request: intake_pb2.OpenCaseRequest, context: Context
    ) -> intake_pb2.OpenCaseResponse:
        recorded = await handlers.open_case(
            self._deps.store, command_context_from(request.context), from_proto.open_case(request)
        )
        return intake_pb2.OpenCaseResponse(result=to_proto.command_result(recorded))

    @override
    @refusals_as_status
    async def RecordInitialAssessment(
        self, request: intake_pb2.RecordInitialAssessmentRequest, context: Context
    ) -> intake_pb2.RecordInitialAssessmentResponse:
        recorded, assessment_id = await handlers.record_initial_assessment(
            self._deps.store,
            self._deps.closures,
            command_context_from(request.context),
            from_proto.record_initial_assessment(request),
        )
        return intake_pb2.RecordInitialAssessmentResponse(
            result=to_proto.command_result(recorded), assessment_id=assessment_id
        )

    @override
    @refusals_as_status
    async def ReopenCase(
        self, request: intake_pb2.ReopenCaseRequest, context: Context
    ) -> intake_pb2.ReopenCaseResponse:
        recorded = await handlers.reopen_case(
            self._deps.store,
            self._deps.closures,
            command_context_from(request.context),
            from_proto.reopen_case(request),
        )
        return intake_pb2.ReopenCaseResponse(result=to_proto.command_result(recorded))

    @override
    @refusals_as_status
    async def GetClient(
        self, request: intake_pb2.GetClientRequest, context: Context
    ) -> intake_pb2.GetClientResponse:
        record = await queries.get_client(
            self._deps.store, from_proto.reader_from(request.context), request.client_id
        )
        return intake_pb2.GetClientResponse(client=to_proto.client(record))

    @override
    @refusals_as_status
    async def FindPossibleDuplicates(
        self, request: intake_pb2.FindPossibleDuplicatesRequest, context: Context
    ) -> intake_pb2.FindPossibleDuplicatesResponse:
        found = await queries.find_possible_duplicates(
            self._deps.directory,
            from_proto.reader_from(request.context),
            from_proto.find_duplicates(request),
        )
        return intake_pb2.FindPossibleDuplicatesResponse(
            candidates=[to_proto.candidate(c) for c in found]
        )

    @override
    @refusals_as_status
    async def GetCase(
        self, request: intake_pb2.GetCaseRequest, context: Context
    ) -> intake_pb2.GetCaseResponse:
        view = await queries.get_case(
            self._deps.store,
            self._deps.closures,
            from_proto.reader_from(request.context),
            request.case_id,
        )
        return intake_pb2.GetCaseResponse(record=to_proto.case_record(view))
