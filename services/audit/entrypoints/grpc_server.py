"""The casetrail.audit.v1.AuditService servicer: protobuf in, audit queries, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from typing_extensions import override

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.commands import NotFound
from casetrail_platform.grpc_platform.server import (
    Context,
    refusals_as_status,
    streamed_refusals_as_status,
)
from casetrail_platform.identity.grpc_auth import principal_of
from events.catalog.access import RecordAccessDenied, RecordAccessed
from events.catalog_registry import all_event_types
from events.errors import FieldProblem
from services.audit.app import as_seen, caseloads, disclosures, ledger, queries
from services.audit.entrypoints import responses, reviews
from services.audit.entrypoints.requests import (
    MAX_PAGE_SIZE,
    RequestReader,
    page_token,
)

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self,
        deps: queries.AuditDeps,
        ledger_deps: ledger.LedgerDeps | None = None,
        client_cases: queries.ClientCases | None = None,
        disclosure_index: disclosures.DisclosureIndex | None = None,
    ) -> None:
        self._deps = deps
        self._ledger_deps = ledger_deps
        self._client_cases = client_cases
        self._disclosure_index = disclosure_index

    @property
    def _ledger(self) -> ledger.LedgerDeps:
        if self._ledger_deps is None:
            raise NotFound("ledger", "this audit server has none")
        return self._ledger_deps

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
        query = read.timeline_query(
            request, basis, frozenset(all_event_types()), self._deps.access.clock()
        )
        read.done()
        entries = responses.TimelineEntries(with_leaves=request.include_ledger_leaves)
        page = await queries.get_timeline(
            self._deps,
            viewer,
            case_id,
            query,
            page_size=page_size,
            cursor=cursor,
            principal=principal_of(context),
            answer=context,
            entry_bytes=entries.answered_bytes,
            page_bytes=responses.TIMELINE_PAGE_BYTES,
            client_cases=self._client_cases,
        )
        return audit_pb2.GetTimelineResponse(
            entries=[entries.entry(recorded, page.redacted) for recorded in page.entries],
            next_page_token=(
                "" if page.next_cursor is None else page_token(case_id, basis, page.next_cursor)
            ),
            total_events=page.total,
            previous_page_token=(
                ""
                if page.previous_cursor is None
                else page_token(case_id, basis, page.previous_cursor)
            ),
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
        now = self._deps.access.clock()
        # Unset: as of the server's now (a caller's own "now" may be ahead of it, refused).
        as_of = read.as_of(request, now, required=False) or now
        read.done()
        state = await queries.get_state_as_of(
            self._deps, viewer, case_id, as_of, basis, principal_of(context), answer=context
        )
        answered = responses.state(state, as_of)
        responses.cut_state(answered)
        return audit_pb2.GetCaseStateAsOfResponse(
            state=answered,
            as_of=responses.timestamp(as_of),
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
        actor_id = read.identifier(request.actor_id, "actor_id") if request.actor_id else None
        page_size = read.page_size(request.page_size, default=MAX_PAGE_SIZE)
        cursor = read.forward_page_token(request.page_token, case_id, basis)
        read.done()
        page = await queries.who_did_what(
            self._deps,
            viewer,
            case_id,
            basis,
            actor_id=actor_id,
            page_size=page_size,
            cursor=cursor,
            principal=principal_of(context),
            answer=context,
        )
        return audit_pb2.WhoDidWhatResponse(
            activities=[responses.activity(item) for item in page.activities],
            next_page_token=(
                "" if page.next_cursor is None else page_token(case_id, basis, page.next_cursor)
            ),
        )

    @override
    @streamed_refusals_as_status
    async def ExportCase(
        self, request: audit_pb2.ExportCaseRequest, context: Context
    ) -> AsyncIterator[audit_pb2.ExportCaseResponse]:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        basis = read.basis(request.basis)
        read.done()
        export = await queries.export_case(
            self._deps,
            viewer,
            case_id,
            basis,
            principal_of(context),
            answer=context,
            client_cases=self._client_cases,
        )
        proofs = (
            None
            if self._ledger_deps is None
            else ledger.ExportProofs(self._ledger_deps, case_id, export.extent)
        )
        # A line shown with a part withheld is no longer the stored event: no proof is asked
        # for it (the ledger would find it does not match), it carries the mark instead, and
        # audit's signed statement of the extent names it withheld with its digest.
        async for page in export.pages:
            proven = [recorded for recorded in page if recorded.event_id not in export.redacted]
            attributes = {} if proofs is None else await proofs.of(proven)
            for chunk in responses.export_chunks(page, attributes, export.redacted):
                yield chunk

    @override
    @refusals_as_status
    async def GetAccessLog(
        self, request: audit_pb2.GetAccessLogRequest, context: Context
    ) -> audit_pb2.GetAccessLogResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        page_size = read.page_size(request.page_size)
        cursor = read.forward_page_token(request.page_token, case_id, queries.ACCESS_LOG.basis)
        read.done()
        page = await queries.get_access_log(
            self._deps,
            viewer,
            case_id,
            principal_of(context),
            answer=context,
            page_size=page_size,
            cursor=cursor,
        )
        return audit_pb2.GetAccessLogResponse(
            records=[
                responses.access_record(recorded)
                for recorded in page.entries
                if isinstance(recorded.event, RecordAccessed)
            ],
            refusals=[
                responses.access_refusal(recorded)
                for recorded in page.entries
                if isinstance(recorded.event, RecordAccessDenied)
            ],
            next_page_token=(
                ""
                if page.next_cursor is None
                else page_token(case_id, queries.ACCESS_LOG.basis, page.next_cursor)
            ),
        )

    @override
    @refusals_as_status
    async def FindCasesOfClient(
        self, request: audit_pb2.FindCasesOfClientRequest, context: Context
    ) -> audit_pb2.FindCasesOfClientResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        client_id = read.identifier(request.client_id, "client_id")
        read.done()
        assert client_id is not None
        # The role is refused (and recorded) before a server without the index says so.
        cases = [] if self._client_cases is None else await self._client_cases.cases_of(client_id)
        found = await queries.find_cases_of_client(
            self._deps, viewer, cases, principal_of(context), answer=context, client_id=client_id
        )
        if self._client_cases is None:
            raise NotFound("client index", "this audit server has none")
        return audit_pb2.FindCasesOfClientResponse(
            case_ids=found.case_ids, truncated=found.truncated
        )

    @override
    @refusals_as_status
    async def GetLedgerCheckpoint(
        self, request: audit_pb2.GetLedgerCheckpointRequest, context: Context
    ) -> audit_pb2.GetLedgerCheckpointResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        if not request.service:
            read.missing("service")
        read.done()
        await queries.authorize_ledger(self._deps, viewer, principal_of(context), answer=context)
        status = await ledger.log_status(self._ledger, request.service)
        return responses.ledger_status(status)

    @override
    @refusals_as_status
    async def ProveEventInclusion(
        self, request: audit_pb2.ProveEventInclusionRequest, context: Context
    ) -> audit_pb2.ProveEventInclusionResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        event_id = read.uuid(request.event_id, "event_id")
        if request.tree_size < 0:
            read.problems.append(FieldProblem("tree_size", "must not be negative"))
        read.done()
        assert event_id is not None
        await queries.authorize_ledger(self._deps, viewer, principal_of(context), answer=context)
        proof = await ledger.prove_event(self._ledger, event_id, request.tree_size)
        return responses.event_proof(proof)

    @override
    @refusals_as_status
    async def ProveLogConsistency(
        self, request: audit_pb2.ProveLogConsistencyRequest, context: Context
    ) -> audit_pb2.ProveLogConsistencyResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        if not request.service:
            read.missing("service")
        read.done()
        await queries.authorize_ledger(self._deps, viewer, principal_of(context), answer=context)
        proof, first_root, second_root = await ledger.prove_log_consistency(
            self._ledger, request.service, request.first_size, request.second_size
        )
        return audit_pb2.ProveLogConsistencyResponse(
            proof=proof, first_root=first_root, second_root=second_root
        )

    @override
    @refusals_as_status
    async def ListLedgerKeys(
        self, request: audit_pb2.ListLedgerKeysRequest, context: Context
    ) -> audit_pb2.ListLedgerKeysResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        read.done()
        await queries.authorize_ledger(self._deps, viewer, principal_of(context), answer=context)
        keys = await ledger.published_keys(self._ledger)
        return audit_pb2.ListLedgerKeysResponse(
            keys=[
                audit_pb2.LedgerKey(service=service, origin=origin, verifier_key=key)
                for service, origin, key in keys
            ]
        )

    @override
    @refusals_as_status
    async def ListDisclosures(
        self, request: audit_pb2.ListDisclosuresRequest, context: Context
    ) -> audit_pb2.ListDisclosuresResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        client_id = read.identifier(request.client_id, "client_id") or ""
        start, end, cursor = reviews.disclosure_request(
            read, request, client_id, self._deps.access.clock()
        )
        page_size = read.page_size(request.page_size)
        read.done()
        asked = disclosures.period(start, end)
        page = await disclosures.list_disclosures(
            self._deps,
            self._client_cases,
            self._disclosure_index,
            viewer,
            client_id,
            asked,
            page_size=page_size,
            cursor=cursor,
            principal=principal_of(context),
            answer=context,
        )
        return reviews.disclosures_response(client_id, asked, page)

    @override
    @refusals_as_status
    async def GetCaseAsSeen(
        self, request: audit_pb2.GetCaseAsSeenRequest, context: Context
    ) -> audit_pb2.GetCaseAsSeenResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        case_id = read.case_id(request.case_id)
        claims = reviews.user_claims(read, request)
        as_of = read.as_of(request, self._deps.access.clock(), required=True)
        read.done()
        assert as_of is not None  # required: done() raised otherwise
        seen = await as_seen.case_as_seen(
            self._deps,
            viewer,
            case_id,
            claims,
            as_of,
            reviews.state_rendering(as_of),
            principal_of(context),
            answer=context,
        )
        return reviews.as_seen_response(seen, as_of)

    @override
    @refusals_as_status
    async def RecordCaseloadAccess(
        self, request: audit_pb2.RecordCaseloadAccessRequest, context: Context
    ) -> audit_pb2.RecordCaseloadAccessResponse:
        read = RequestReader()
        viewer = read.viewer(principal_of(context), request.context)
        view = read.caseload_view(request.view)
        case_ids = [
            read.case_id(case_id, f"case_ids[{index}]")
            for index, case_id in enumerate(request.case_ids)
        ]
        if case_ids and not view.sections:
            read.problems.append(FieldProblem("case_ids", f"must be empty for view {view.value}"))
        refused_by = read.caseload_refusal(request.refused_by)
        if case_ids and refused_by is not None:
            read.problems.append(FieldProblem("case_ids", "must be empty with refused_by"))
        read.done()
        access = await caseloads.record_caseload_access(
            self._deps, viewer, principal_of(context), view, case_ids, refused_by
        )
        return audit_pb2.RecordCaseloadAccessResponse(
            rule=access.rule, policy_version=access.policy_version, recorded=access.recorded
        )
