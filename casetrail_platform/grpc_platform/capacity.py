"""How many casetrail calls one server answers at once, and the refusal of the ones over.

A gRPC asyncio server takes its calls from gRPC core one per turn of the event loop, the loop
its handlers run on. With too much work at once a turn takes long, calls wait in core's queue
of calls nobody took yet, and after 30 s (``grpc.server_max_unrequested_time_in_server``) core
cancels them: the caller gets ``CANCELLED`` with no details, and nothing of ours ever saw the
call (100 exports of a 3,000-event case at once: 27-50 of them). Bounding what runs at once
keeps the turns short, so every call is taken at once and either answered or refused
``RESOURCE_EXHAUSTED`` with the limit and a retry delay (``errors.busy_status``).

Health and reflection are never counted nor refused: probes must answer while the server is
full (only casetrail's own methods are limited). A server-streaming answer (audit's export)
holds the loop longest, so those have a smaller limit of their own, within the total.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from casetrail_platform.grpc_platform.errors import busy_status
from casetrail_platform.typed_numbers import ascii_whole_number

MAX_CALLS_VARIABLE = "CASETRAIL_GRPC_MAX_CALLS"
MAX_STREAMS_VARIABLE = "CASETRAIL_GRPC_MAX_STREAMS"

_OWN_METHODS = "/casetrail."


@dataclass(frozen=True)
class Capacity:
    """Calls one server answers at once; the ones over are refused ``RESOURCE_EXHAUSTED``."""

    max_calls: int = 100
    """casetrail calls in progress on the server (unary and streaming)."""
    max_streams: int = 4
    """Of those, server-streaming answers (exports): each reads and encodes a whole case."""
    retry_after_seconds: int = 1
    """The retry delay a refusal suggests (``google.rpc.RetryInfo``)."""

    def __post_init__(self) -> None:
        if self.max_calls < 1 or self.max_streams < 1:
            raise ValueError("a server answers at least one call and one stream at once")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Capacity:
        """``CASETRAIL_GRPC_MAX_CALLS`` and ``CASETRAIL_GRPC_MAX_STREAMS``, when set."""
        default = cls()
        return cls(
            max_calls=_positive(environ, MAX_CALLS_VARIABLE, default.max_calls),
            max_streams=_positive(environ, MAX_STREAMS_VARIABLE, default.max_streams),
        )


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    text = (environ.get(name) or "").strip()
    if not text:
        return default
    value = ascii_whole_number(text)
    if value is None or value < 1:
        raise ValueError(f"{name} must be a whole number of calls, at least 1 (got {text!r})")
    return value


class CapacityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts casetrail calls in progress and refuses those over ``capacity``."""

    def __init__(self, capacity: Capacity) -> None:
        self._capacity = capacity
        # One event loop runs every call of the server: plain counters need no lock.
        self._calls = 0
        self._streams = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(_OWN_METHODS):
            return handler
        if handler.unary_unary is not None:
            return self._unary(handler)
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return self._streaming(handler)
        return handler

    def _refusal(self, streaming: bool) -> grpc.Status | None:
        capacity = self._capacity
        if self._calls >= capacity.max_calls:
            return rpc_status.to_status(
                busy_status(MAX_CALLS_VARIABLE, capacity.max_calls, capacity.retry_after_seconds)
            )
        if streaming and self._streams >= capacity.max_streams:
            return rpc_status.to_status(
                busy_status(
                    MAX_STREAMS_VARIABLE, capacity.max_streams, capacity.retry_after_seconds
                )
            )
        return None

    def _unary(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            refusal = self._refusal(streaming=False)
            if refusal is not None:
                await context.abort_with_status(refusal)
            self._calls += 1
            try:
                return await behavior(request, context)
            finally:
                self._calls -= 1

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _streaming(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        streaming = handler.unary_stream

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            refusal = self._refusal(streaming=True)
            if refusal is not None:
                await context.abort_with_status(refusal)
            self._calls += 1
            self._streams += 1
            try:
                async for message in streaming(request, context):
                    yield message
            finally:
                self._calls -= 1
                self._streams -= 1

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
