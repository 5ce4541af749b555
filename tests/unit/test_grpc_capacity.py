"""The calls one server answers at once (``grpc_platform.capacity``), through a real server
(port 0) and channel: the calls over are refused RESOURCE_EXHAUSTED naming the limit, with a
retry delay; health and reflection answer while the server is full; the limits come from the
environment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from casetrail_platform.grpc_platform.capacity import (
    MAX_CALLS_VARIABLE,
    MAX_STREAMS_VARIABLE,
    Capacity,
)
from casetrail_platform.grpc_platform.errors import SERVER_BUSY
from casetrail_platform.grpc_platform.server import create_server
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.identity.principal import Principal
from casetrail_platform.identity.verifier import TokenVerifier
from tests.support.grpc import details, refusal
from tests.support.identity import TestIssuer

SERVICE = "casetrail.test.v1.Held"
UNARY = f"/{SERVICE}/Wait"
STREAM = f"/{SERVICE}/Stream"


class Held:
    """Calls that stay in progress until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.changed = asyncio.Condition()

    async def wait(self, request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        await self._enter()
        await self.release.wait()
        return empty_pb2.Empty()

    async def stream(self, request: Any, context: Any) -> AsyncIterator[empty_pb2.Empty]:
        await self._enter()
        yield empty_pb2.Empty()
        await self.release.wait()

    async def _enter(self) -> None:
        async with self.changed:
            self.entered += 1
            self.changed.notify_all()

    def register(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Wait": grpc.unary_unary_rpc_method_handler(
                self.wait,
                request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                self.stream,
                request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
async def channel(held: Held, issuer: TestIssuer) -> AsyncIterator[grpc.aio.Channel]:
    async with _serving(held, issuer.verifier(), Capacity(max_calls=3, max_streams=1)) as opened:
        yield opened


@asynccontextmanager
async def _serving(
    held: Held, verifier: TokenVerifier, capacity: Capacity
) -> AsyncIterator[grpc.aio.Channel]:
    server, port, _ = await create_server(
        "127.0.0.1:0", [held.register], [SERVICE], verifier=verifier, capacity=capacity
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            yield opened
    finally:
        await server.stop(None)


def _caller(channel: grpc.aio.Channel, issuer: TestIssuer) -> tuple[Callable[[], Any], Any]:
    metadata = bearer_metadata(issuer.mint())
    unary = channel.unary_unary(
        UNARY,
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )
    stream = channel.unary_stream(
        STREAM,
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )
    return (
        lambda: unary(empty_pb2.Empty(), metadata=metadata),
        lambda: stream(empty_pb2.Empty(), metadata=metadata),
    )


async def _entered(held: Held, count: int) -> None:
    async with asyncio.timeout(10), held.changed:
        await held.changed.wait_for(lambda: held.entered >= count)


async def _busy(call: Any, limit: str, maximum: int) -> None:
    code, status = await refusal(call)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limit in status.message
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == SERVER_BUSY
    assert dict(info.metadata) == {"limit": limit, "maximum": str(maximum)}
    [retry] = details(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 1


async def test_calls_over_the_limit_are_refused_busy_and_health_still_answers(
    channel: grpc.aio.Channel, issuer: TestIssuer, held: Held
) -> None:
    unary, _ = _caller(channel, issuer)
    waiting = [unary() for _ in range(3)]
    await _entered(held, 3)

    await _busy(unary(), MAX_CALLS_VARIABLE, 3)
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = [s.name async for answer in listed for s in answer.list_services_response.service]
    assert SERVICE in names

    held.release.set()
    await asyncio.gather(*waiting)
    # The finished calls no longer count.
    assert await unary() == empty_pb2.Empty()


async def test_streams_have_a_smaller_limit_within_the_total(
    channel: grpc.aio.Channel, issuer: TestIssuer, held: Held
) -> None:
    unary, stream = _caller(channel, issuer)
    first = stream()
    assert [message async for message in _first(first)] == [empty_pb2.Empty()]

    await _busy(_drained(stream()), MAX_STREAMS_VARIABLE, 1)
    # A unary call still fits under the total.
    other = unary()
    await _entered(held, 2)

    held.release.set()
    await other
    assert [message async for message in first] == []
    assert [message async for message in stream()] == [empty_pb2.Empty()]


async def _first(call: Any) -> AsyncIterator[Any]:
    async for message in call:
        yield message
        return


async def _drained(call: Any) -> list[Any]:
    return [message async for message in call]


async def test_unauthenticated_calls_over_the_limit_learn_only_that_the_server_is_busy(
    channel: grpc.aio.Channel, issuer: TestIssuer, held: Held
) -> None:
    unary, _ = _caller(channel, issuer)
    waiting = [unary() for _ in range(3)]
    await _entered(held, 3)
    anonymous = channel.unary_unary(
        UNARY,
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )

    await _busy(anonymous(empty_pb2.Empty()), MAX_CALLS_VARIABLE, 3)
    held.release.set()
    await asyncio.gather(*waiting)


class Counting(TokenVerifier):
    """The test issuer's verifier, counting the tokens it was asked to check; ``fault``: each
    check raises it instead (a fault of the verifier itself)."""

    def __init__(self, issuer: TestIssuer) -> None:
        inner = issuer.verifier()
        super().__init__(inner.keys, inner.audience)
        self.checked = 0
        self.fault: Exception | None = None

    async def verify(self, token: str) -> Principal:
        self.checked += 1
        if self.fault is not None:
            raise self.fault
        return await super().verify(token)


async def test_a_call_over_the_limit_is_refused_before_its_token_is_verified(
    issuer: TestIssuer, held: Held
) -> None:
    """The token was verified while the handler was looked up, before the limit's check in
    the call: a full server still checked every signature (and fetched the issuer's keys for
    an unknown key id) for calls it then refused busy."""
    verifier = Counting(issuer)
    async with _serving(held, verifier, Capacity(max_calls=1, max_streams=1)) as opened:
        unary, _ = _caller(opened, issuer)
        waiting = unary()
        await _entered(held, 1)
        assert verifier.checked == 1
        await _busy(unary(), MAX_CALLS_VARIABLE, 1)
        assert verifier.checked == 1
        held.release.set()
        await waiting


async def test_a_fault_verifying_a_token_refuses_the_call_and_never_shows_the_token(
    issuer: TestIssuer, held: Held, caplog: pytest.LogCaptureFixture
) -> None:
    """A KeyError naming the token (the verifier's cache, forgetting a token twice) went out
    as UNKNOWN with the whole token in its message, and into the log's traceback."""
    verifier = Counting(issuer)
    token = issuer.mint()
    verifier.fault = KeyError(token)
    async with _serving(held, verifier, Capacity()) as opened:
        unary = opened.unary_unary(
            UNARY,
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        code, status = await refusal(unary(empty_pb2.Empty(), metadata=bearer_metadata(token)))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    [info] = details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "TOKEN_INVALID"
    assert token not in str(status)
    assert "verifying a bearer token failed (KeyError)" in caplog.text
    assert token not in caplog.text
    assert held.entered == 0


def test_the_limits_come_from_the_environment() -> None:
    assert Capacity.from_env({}) == Capacity()
    assert Capacity.from_env({MAX_CALLS_VARIABLE: "10", MAX_STREAMS_VARIABLE: "2"}) == Capacity(
        max_calls=10, max_streams=2
    )
    for bad in ("0", "-1", "many", "2.5"):
        with pytest.raises(ValueError, match=MAX_CALLS_VARIABLE):
            Capacity.from_env({MAX_CALLS_VARIABLE: bad})
