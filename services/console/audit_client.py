"""Audit's gRPC API as the console calls it: always with the signed-in user's token and
purpose, and naming the console as the client (``x-casetrail-client`` metadata)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import grpc

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from cli.rpc import Refusal, query, refusal_of, timestamp
from events.identity.grpc_auth import bearer_metadata

CLIENT_HEADER = "x-casetrail-client"
CLIENT_NAME = "casetrail-console"
BASES = {"occurred": audit_pb2.TIME_BASIS_OCCURRED, "recorded": audit_pb2.TIME_BASIS_RECORDED}


class AuditRefused(Exception):
    """Audit refused a call; ``refusal`` holds the status and its details."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code.name)
        self.refusal = refusal


@dataclass(frozen=True)
class Caller:
    token: str
    purpose: str

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (*bearer_metadata(self.token), (CLIENT_HEADER, CLIENT_NAME))


class AuditClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = audit_pb2_grpc.AuditServiceStub(channel)

    async def timeline(
        self,
        caller: Caller,
        case_id: str,
        basis: str,
        *,
        as_of: datetime | None,
        page_size: int,
        page_token: str,
    ) -> audit_pb2.GetTimelineResponse:
        request = audit_pb2.GetTimelineRequest(
            context=query(caller.purpose),
            case_id=case_id,
            basis=BASES[basis],
            page_size=page_size,
            page_token=page_token,
        )
        if as_of is not None:
            request.as_of.CopyFrom(timestamp(as_of))
        try:
            response: audit_pb2.GetTimelineResponse = await self._stub.GetTimeline(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return response

    async def state_as_of(
        self, caller: Caller, case_id: str, moment: datetime, basis: str
    ) -> audit_pb2.CaseState:
        request = audit_pb2.GetCaseStateAsOfRequest(
            context=query(caller.purpose),
            case_id=case_id,
            as_of=timestamp(moment),
            basis=BASES[basis],
        )
        try:
            response: audit_pb2.GetCaseStateAsOfResponse = await self._stub.GetCaseStateAsOf(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return response.state

    async def access_log(self, caller: Caller, case_id: str) -> list[audit_pb2.AccessRecord]:
        request = audit_pb2.GetAccessLogRequest(context=query(caller.purpose), case_id=case_id)
        try:
            response: audit_pb2.GetAccessLogResponse = await self._stub.GetAccessLog(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return list(response.records)

    async def export(self, caller: Caller, case_id: str) -> AsyncIterator[bytes]:
        """The export's chunks; a refusal comes before the first one (or as AuditRefused)."""
        request = audit_pb2.ExportCaseRequest(context=query(caller.purpose), case_id=case_id)
        call = self._stub.ExportCase(request, metadata=caller.metadata())
        try:
            async for chunk in call:
                yield chunk.json_lines
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
