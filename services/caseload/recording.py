"""Every read of a caseload view is recorded in audit before it is answered.

The processor has no event store of its own, so audit records the read
(``AuditService.RecordCaseloadAccess``): it is called with the reader's own bearer token, so
audit decides ``READ_CASELOADS`` for the verified caller and purpose, and records one
``record.accessed`` per case named (or the refusal) in its store. The view answers only after
every call succeeded; audit unreachable, unconfigured or refusing means no answer (fail closed:
503, 403). A view naming more cases than one call takes is recorded in several calls. A read
the processor refuses of its own (a part no process asked for) is sent as that refusal
(``refused_by``), which audit records whatever the caller's role: the policy allows the views
to auditors, so a read of a view naming no case would record nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn, TypeAlias

import grpc

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail_platform.identity.grpc_auth import CLIENT_HEADER, bearer_metadata
from casetrail_platform.identity.tls import ClientTls, PlaintextRefused, channel
from casetrail_platform.limits import MAX_LIST_ITEMS
from cli.rpc import refusal_of
from services.caseload.access import Caller, Refused

CLIENT_NAME = "casetrail-caseload"
"""How the reads are named in audit's access log (``client_application``)."""
CASES_PER_CALL = MAX_LIST_ITEMS
CALL_SECONDS = 10.0
"""Deadline of one call: a view waits no longer for audit before refusing."""

View: TypeAlias = audit_pb2.CaseloadView.ValueType


@dataclass
class AccessRecorder:
    address: str | None
    """Audit's gRPC address; ``None``: not configured, so every view refuses."""
    tls: ClientTls | None = None
    plaintext_allowed: bool = False
    """Audit beyond loopback may be dialled without ``tls`` (``CASETRAIL_GRPC_ALLOW_PLAINTEXT``;
    the worker refuses to start otherwise, ``processor.CaseloadWorker``)."""
    _stub: audit_pb2_grpc.AuditServiceStub | None = field(default=None, init=False)
    _channel: grpc.aio.Channel | None = field(default=None, init=False)

    async def record(self, caller: Caller, view: View, case_ids: Sequence[str]) -> None:
        """Record the read of ``case_ids`` through ``view`` by ``caller``; ``Refused`` when
        it is not recorded. Every chunk is sent even after a refusal, so each case named has
        the refusal on record."""
        starts = range(0, len(case_ids), CASES_PER_CALL)
        chunks = [case_ids[at : at + CASES_PER_CALL] for at in starts] or [()]
        refusal: Refused | None = None
        for chunk in chunks:
            refused = await self._call(caller, view, case_ids=chunk)
            refusal = refusal or refused
        if refusal is not None:
            raise refusal

    async def refuse(self, caller: Caller, view: View, refusal: Refused) -> NoReturn:
        """Record ``refusal``, the processor's own refusal of ``caller``'s read of ``view``
        (naming no case), then raise it; ``Refused`` 503 (or 401) when it is not recorded."""
        await self._call(caller, view, refused_by=refusal.code)
        raise refusal

    async def _call(
        self, caller: Caller, view: View, *, case_ids: Sequence[str] = (), refused_by: str = ""
    ) -> Refused | None:
        """One call to audit: audit's refusal (403) if it refused, ``Refused`` raised if the
        call failed otherwise."""
        request = audit_pb2.RecordCaseloadAccessRequest(
            context=common_pb2.QueryContext(purpose=caller.purpose.value),
            view=view,
            case_ids=case_ids,
            refused_by=refused_by,
        )
        metadata = (*bearer_metadata(caller.token), (CLIENT_HEADER, CLIENT_NAME))
        try:
            await self._audit().RecordCaseloadAccess(
                request, metadata=metadata, timeout=CALL_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            refused = _refused(error)
            if refused.status != 403:
                raise refused from None
            return refused
        return None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    def _audit(self) -> audit_pb2_grpc.AuditServiceStub:
        if self.address is None:
            raise Refused(
                503,
                "no audit address is configured (CASETRAIL_AUDIT_ADDRESS): the reads cannot be"
                " recorded",
                "AUDIT_NOT_CONFIGURED",
            )
        if self._stub is None:
            # Opened on first use, inside the web server's event loop.
            try:
                self._channel = channel(
                    self.address, self.tls, plaintext_allowed=self.plaintext_allowed
                )
            except PlaintextRefused as refused:  # the worker refuses it before it starts
                raise Refused(503, str(refused), "AUDIT_NOT_CONFIGURED") from None
            self._stub = audit_pb2_grpc.AuditServiceStub(self._channel)
        return self._stub


def _refused(error: grpc.aio.AioRpcError) -> Refused:
    refusal = refusal_of(error)
    reason = refusal.reason or refusal.code.name
    if refusal.code is grpc.StatusCode.PERMISSION_DENIED:
        return Refused(403, refusal.message, reason)
    if refusal.code is grpc.StatusCode.UNAUTHENTICATED:
        return Refused(401, refusal.message, reason)
    return Refused(
        503,
        f"audit did not record the read ({refusal.code.name}), so nothing is disclosed",
        "AUDIT_UNAVAILABLE",
    )
