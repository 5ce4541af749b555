"""What every casetrail gRPC call reports: a count by status, a latency, a span, log context.

``TelemetryInterceptor`` is the outermost interceptor of every server (so refusals by
authentication and by the edge are counted too). Per call it costs two dictionary look-ups,
one clock read and a counter and histogram update; the span and the correlation id for logs
only while tracing is on, or while logs are JSON.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import grpc
from opentelemetry.trace import Span

from casetrail_platform.telemetry.logs import correlation, correlation_logged
from casetrail_platform.telemetry.metrics import Metrics, process_metrics
from casetrail_platform.telemetry.tracing import (
    TRACEPARENT,
    mark_failed,
    server_span,
    tracing_enabled,
)

_OWN_METHODS = "/casetrail."


class TelemetryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics or process_metrics()
        self._methods: dict[str, _MethodMetrics] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        handler = await continuation(details)
        if handler is None or not method.startswith(_OWN_METHODS):
            return handler
        measured = self._methods.get(method)
        if measured is None:
            measured = self._methods[method] = _MethodMetrics(method, self._metrics)
        # Wrapped per call, never cached: the handler under it is made per call (it carries
        # the caller authentication found), and so is the caller's trace context.
        traceparent = _traceparent(details) if tracing_enabled() else None
        return _observed(method, handler, measured, traceparent)


class _MethodMetrics:
    """The metric children of one method, looked up once."""

    def __init__(self, method: str, metrics: Metrics) -> None:
        self.service, _, self.name = method.lstrip("/").rpartition("/")
        self._metrics = metrics
        self._latency = metrics.rpc_seconds.labels(self.service, self.name)
        self._counters: dict[str, Any] = {}

    def count(self, context: Any, started: float) -> None:
        self._latency.observe(time.perf_counter() - started)
        code = context.code()
        code_name = code.name if isinstance(code, grpc.StatusCode) else "OK"
        counter = self._counters.get(code_name)
        if counter is None:
            counter = self._counters[code_name] = self._metrics.rpcs.labels(
                self.service, self.name, code_name
            )
        counter.inc()


def _traceparent(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == TRACEPARENT:
            return str(value)
    return None


def _observed(
    method: str, handler: grpc.RpcMethodHandler, measured: _MethodMetrics, traceparent: str | None
) -> grpc.RpcMethodHandler:
    name = measured.name
    count = measured.count

    if handler.unary_unary is not None or (
        # A streaming method answered by a coroutine (writing with ``context.write``, or
        # refusing the call before any message) is awaited like a unary one.
        handler.unary_stream is not None and not inspect.isasyncgenfunction(handler.unary_stream)
    ):
        behavior = handler.unary_unary or handler.unary_stream
        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary is not None
            else grpc.unary_stream_rpc_method_handler
        )

        async def unary(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            if not (tracing_enabled() or correlation_logged()):
                # The common case: counted and timed, nothing else to set up.
                try:
                    return await behavior(request, context)
                finally:
                    count(context, started)
            try:
                with (
                    server_span(method, traceparent, **{"rpc.method": name}) as span,
                    correlation(logged_correlation_id(request)),
                ):
                    failed = True
                    try:
                        answer = await behavior(request, context)
                        failed = False
                        return answer
                    finally:
                        _end_span(span, context, failed)
            finally:
                count(context, started)

        return make(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                with (
                    server_span(method, traceparent, **{"rpc.method": name}) as span,
                    correlation(logged_correlation_id(request)),
                ):
                    failed = True
                    try:
                        async for message in streaming(request, context):
                            yield message
                        failed = False
                    finally:
                        _end_span(span, context, failed)
            finally:
                count(context, started)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The codes that make a SERVER span an error (OpenTelemetry's gRPC conventions): a refusal
of the caller's request is the server working."""


def _end_span(span: Span | None, context: Any, failed: bool) -> None:
    # The status and code are ours to set: the span records no exception (see tracing).
    if span is None:
        return
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        # Nothing answered yet: an exception escaping the handler is answered UNKNOWN.
        code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_FAULTS:
        mark_failed(span, code.name)


_UUID_TEXT_LIMIT = len("urn:uuid:") + 36
"""The longest text ``UUID`` reads (``urn:uuid:`` and the hyphenated form)."""


def logged_correlation_id(request: Any) -> str | None:
    """The request's correlation id for the call's log lines, once it reads as a UUID (its
    canonical form); ``None`` otherwise. This interceptor runs before the edge checks the
    request, and a log line must not carry whatever text a caller sent (megabytes of it, or
    control characters) however the call ends."""
    context = getattr(request, "context", None)
    value = getattr(context, "correlation_id", None)
    if not isinstance(value, str) or not value or len(value) > _UUID_TEXT_LIMIT:
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None
