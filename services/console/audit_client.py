"""Audit's gRPC API as the console calls it: always with the signed-in user's token and
purpose, and naming the console as the client (``x-casetrail-client`` metadata)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.identity.grpc_auth import CLIENT_HEADER, bearer_metadata
from cli.rpc import Refusal, query, refusal_of, timestamp
from services.console.pages import TimelineFilter

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
        chosen: TimelineFilter,
        *,
        page_size: int,
        page_token: str,
    ) -> audit_pb2.GetTimelineResponse:
        """One page, filtered and paged by audit's timeline index. Access events are left out
        unless their type is asked for: the access log page lists them."""
        request = audit_pb2.GetTimelineRequest(
            context=query(caller.purpose),
            case_id=case_id,
            basis=BASES[basis],
            page_size=page_size,
            page_token=page_token,
            event_types=[chosen.event_type] if chosen.event_type else [],
            actor_id=chosen.actor,
            exclude_access_events=True,
            include_ledger_leaves=True,
        )
        if chosen.since is not None:
            request.since.CopyFrom(timestamp(chosen.since))
        if chosen.until is not None:
            request.until.CopyFrom(timestamp(chosen.until))
        try:
            response: audit_pb2.GetTimelineResponse = await self._stub.GetTimeline(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return response

    async def ledger_keys(self, caller: Caller) -> dict[str, str]:
        """Every service log's published key (note verifier form), by log origin."""
        request = audit_pb2.ListLedgerKeysRequest(context=query(caller.purpose))
        try:
            response: audit_pb2.ListLedgerKeysResponse = await self._stub.ListLedgerKeys(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return {key.origin: key.verifier_key for key in response.keys}

    async def prove_event(
        self, caller: Caller, event_id: str
    ) -> audit_pb2.ProveEventInclusionResponse:
        """The event's inclusion proof in the newest checkpoint audit verified."""
        request = audit_pb2.ProveEventInclusionRequest(
            context=query(caller.purpose), event_id=event_id
        )
        try:
            response: audit_pb2.ProveEventInclusionResponse = await self._stub.ProveEventInclusion(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return response

    async def state_as_of(
        self, caller: Caller, case_id: str, moment: datetime | None, basis: str
    ) -> tuple[audit_pb2.CaseState, datetime]:
        """The state as of ``moment`` (``None``: audit's now), and the moment audit used."""
        request = audit_pb2.GetCaseStateAsOfRequest(
            context=query(caller.purpose),
            case_id=case_id,
            as_of=None if moment is None else timestamp(moment),
            basis=BASES[basis],
        )
        try:
            response: audit_pb2.GetCaseStateAsOfResponse = await self._stub.GetCaseStateAsOf(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return response.state, response.as_of.ToDatetime(tzinfo=UTC)

    async def access_log(
        self, caller: Caller, case_id: str, *, page_size: int, page_token: str
    ) -> audit_pb2.GetAccessLogResponse:
        """A page of the case's recorded accesses and refusals, oldest first."""
        request = audit_pb2.GetAccessLogRequest(
            context=query(caller.purpose),
            case_id=case_id,
            page_size=page_size,
            page_token=page_token,
        )
        try:
            response: audit_pb2.GetAccessLogResponse = await self._stub.GetAccessLog(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return response

    async def cases_of_client(self, caller: Caller, client_id: str) -> list[str]:
        """The client's cases the caller may read (each recorded by audit as an access)."""
        request = audit_pb2.FindCasesOfClientRequest(
            context=query(caller.purpose), client_id=client_id
        )
        try:
            response: audit_pb2.FindCasesOfClientResponse = await self._stub.FindCasesOfClient(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return list(response.case_ids)

    async def disclosures(
        self, caller: Caller, client_id: str, since: datetime, until: datetime | None
    ) -> audit_pb2.ListDisclosuresResponse:
        """The first page (up to 1000, audit's most) of the client's accounting of disclosures:
        when there are more, ``next_page_token`` is set and ``total_disclosures`` counts them
        all, which the page tells, asking to narrow the period (disclosures.html)."""
        request = audit_pb2.ListDisclosuresRequest(
            context=query(caller.purpose),
            client_id=client_id,
            period_start=timestamp(since),
            page_size=1000,
        )
        if until is not None:
            request.period_end.CopyFrom(timestamp(until))
        try:
            response: audit_pb2.ListDisclosuresResponse = await self._stub.ListDisclosures(
                request, metadata=caller.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
        return response

    async def export(self, caller: Caller, case_id: str) -> AsyncIterator[bytes]:
        """The export's chunks; a refusal comes before the first one (or as AuditRefused)."""
        request = audit_pb2.ExportCaseRequest(context=query(caller.purpose), case_id=case_id)
        call = self._stub.ExportCase(request, metadata=caller.metadata())
        try:
            async for chunk in call:
                yield chunk.json_lines
        except grpc.aio.AioRpcError as error:
            raise AuditRefused(refusal_of(error)) from None
