"""A servicer on a real grpc.aio server (port 0) behind a real channel, and its refusals read
back as google.rpc.Status details."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from casetrail_platform.grpc_platform.server import Registration, create_server
from tests.support.identity import TestIssuer, caller_channel

M = TypeVar("M", bound=Message)

DETAIL_KINDS: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ErrorInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
)
"""The google.rpc details the platform puts in refusals."""


@asynccontextmanager
async def serving(
    register: Registration, service_name: str, issuer: TestIssuer
) -> AsyncIterator[Any]:
    """A channel to a server running the servicer ``register`` adds, trusting ``issuer``;
    each call carries the token of whoever built its request's context (``acting``).
    Stopped on exit."""
    server, port, _ = await create_server(
        "127.0.0.1:0", [register], [service_name], verifier=issuer.verifier()
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield caller_channel(channel, issuer)
    finally:
        await server.stop(None)


async def refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """Await a call that must be refused; its code and google.rpc.Status."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status: status_pb2.Status | None = rpc_status.from_call(raised.value)
    assert status is not None, "refusals carry a google.rpc.Status"
    return raised.value.code(), status


def details(status: status_pb2.Status, kind: type[M]) -> list[M]:
    """The status's details of one kind, in order."""
    return [message for message in unpacked(status, (kind,)) if isinstance(message, kind)]


def unpacked(
    status: status_pb2.Status, kinds: tuple[type[Message], ...] = DETAIL_KINDS
) -> list[Message]:
    """Every detail of the given kinds, in order."""
    found: list[Message] = []
    for packed in status.details:
        for kind in kinds:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found.append(message)
    return found


def violated_fields(status: status_pb2.Status) -> list[str]:
    """The fields a BadRequest names, in order."""
    return [
        violation.field
        for bad in details(status, error_details_pb2.BadRequest)
        for violation in bad.field_violations
    ]


def mentions(status: status_pb2.Status, text: str) -> bool:
    """Whether ``text`` is anywhere in the status a caller receives: its message or any
    detail (an ErrorInfo's metadata, a ResourceInfo's name...), packed or not: the check for
    a refusal that must not tell the caller of something."""
    return text in status.message or text.encode() in status.SerializeToString()
