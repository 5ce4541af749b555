"""The casetrail.audit.v1.Audit servicer: protobuf in, audit queries, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from typing_extensions import override

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from events.grpc_platform.server import (
    Context,
    refusals_as_status,
    streamed_refusals_as_status,
)
from events.identity.grpc_auth import principal_of
from services.audit.app import queries
from services.audit.entrypoints import responses
from services.audit.entrypoints.requests import RequestReader, moment, page_token

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, deps: queries.AuditDeps) -> None:
        self._deps = deps

    @override
    @refusals_as_status
    async def GetTimeline(
        self, request: audit_pb2.GetTimelineRequest, context: Context
    ) -> audit_pb2.GetTimelineResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        basis = read.basis(request.basis)
        page_size = read.page_size(request.page_size)
        cursor = read.page_token(request.page_token, case_id, basis)
        read.done()
        page = await queries.get_timeline(
            self._deps,
            viewer,
            case_id,
            basis,
            as_of=moment(request.as_of) if request.HasField("as_of") else None,
            page_size=page_size,
            cursor=cursor,
        )
        return audit_pb2.GetTimelineResponse(
            entries=[responses.timeline_entry(recorded) for recorded in page.entries],
            next_page_token=(
                "" if page.next_cursor is None else page_token(case_id, basis, page.next_cursor)
            ),
            total_events=page.total,
        )

    @override
    @refusals_as_status
    async def GetCaseStateAsOf(
        self, request: audit_pb2.GetCaseStateAsOfRequest, context: Context
    ) -> audit_pb2.GetCaseStateAsOfResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        basis = read.basis(request.basis, required=True)
        if not request.HasField("as_of"):
            read.missing("as_of")
        read.done()
        as_of = moment(request.as_of)
        state = await queries.get_state_as_of(self._deps, viewer, case_id, as_of, basis)
        return audit_pb2.GetCaseStateAsOfResponse(
            state=responses.state(state, as_of),
            as_of=request.as_of,
            basis=responses.BASES[basis],
        )

    @override
    @refusals_as_status
    async def WhoDidWhat(
        self, request: audit_pb2.WhoDidWhatRequest, context: Context
    ) -> audit_pb2.WhoDidWhatResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        basis = read.basis(request.basis)
        read.done()
        activities = await queries.who_did_what(
            self._deps, viewer, case_id, basis, actor_id=request.actor_id or None
        )
        return audit_pb2.WhoDidWhatResponse(
            activities=[responses.activity(item) for item in activities]
        )

    @override
    @streamed_refusals_as_status
    async def ExportCase(
        self, request: audit_pb2.ExportCaseRequest, context: Context
    ) -> AsyncIterator[audit_pb2.ExportCaseChunk]:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        basis = read.basis(request.basis)
        read.done()
        ordered = await queries.export_case(self._deps, viewer, case_id, basis)
        for chunk in responses.export_chunks(ordered):
            yield chunk

    @override
    @refusals_as_status
    async def GetAccessLog(
        self, request: audit_pb2.GetAccessLogRequest, context: Context
    ) -> audit_pb2.GetAccessLogResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        read.done()
        accesses = await queries.get_access_log(self._deps, viewer, case_id)
        return audit_pb2.GetAccessLogResponse(
            records=[responses.access_record(recorded) for recorded in accesses]
        )
