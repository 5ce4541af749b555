"""Audit's servicer on a free port, for the tests that call it through gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import grpc

from casetrail.audit.v1 import audit_pb2_grpc
from services.audit.entrypoints.grpc_server import SERVICE_NAME, AuditServicer
from tests.support.grpc import serving
from tests.support.identity import TestIssuer


@asynccontextmanager
async def audit_server(
    servicer: AuditServicer, issuer: TestIssuer
) -> AsyncIterator[audit_pb2_grpc.AuditServiceAsyncStub]:
    """``servicer`` served on a free port, trusting ``issuer``; a stub of it."""

    def register(server: grpc.aio.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        # The stub is the async flavour on an aio channel; grpc itself is untyped here.
        yield cast("audit_pb2_grpc.AuditServiceAsyncStub", audit_pb2_grpc.AuditServiceStub(channel))
