"""Spans carry no exception text: a call refused while handling a pydantic error (whose
message quotes the request's values), a fault escaping a handler and an event failing in a
consumer leave only status codes and type names in the spans, never a message or a stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, ValidationError

from casetrail_platform.telemetry.grpc_server import TelemetryInterceptor
from casetrail_platform.telemetry.metrics import Metrics
from casetrail_platform.telemetry.tracing import consumer_span
from tests.support.tracing import traced

_SECRET = "heroin relapse"
_SERVICE = "casetrail.probe.v1.ProbeService"


class _Goal(BaseModel):
    statement: int


def _refuse_chained() -> None:
    try:
        _Goal.model_validate({"statement": _SECRET})
    except ValidationError as invalid:
        raise ValueError(f"the plan rule: {_SECRET}") from invalid


async def _refused(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    try:
        _refuse_chained()
    except ValueError:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "goals[0].statement is invalid")
    return b""


async def _faulty(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    try:
        _refuse_chained()
    except ValueError as rule:
        raise RuntimeError(f"lost: {_SECRET}") from rule
    return b""


async def _internal(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    try:
        _refuse_chained()
    except ValueError:
        await context.abort(grpc.StatusCode.INTERNAL, "a fault of ours")
    return b""


async def _streamed(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield b"first"
    try:
        _refuse_chained()
    except ValueError:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the export rule")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with traced() as exporter:
        yield exporter


def _everything_said(span: ReadableSpan) -> str:
    said = [span.name, str(span.status.description), repr(dict(span.attributes or {}))]
    for event in span.events:
        said.extend([event.name, repr(dict(event.attributes or {}))])
    return "\n".join(said)


def _assert_nothing_quoted(span: ReadableSpan) -> None:
    said = _everything_said(span)
    assert _SECRET not in said
    assert "Traceback" not in said
    assert "input_value" not in said
    assert "plan rule" not in said
    assert not span.events, [event.name for event in span.events]


async def test_server_spans_carry_codes_not_exception_text(
    spans: InMemorySpanExporter,
) -> None:
    handlers = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Refused": grpc.unary_unary_rpc_method_handler(_refused),
            "Faulty": grpc.unary_unary_rpc_method_handler(_faulty),
            "Internal": grpc.unary_unary_rpc_method_handler(_internal),
            "Streamed": grpc.unary_stream_rpc_method_handler(_streamed),
        },
    )
    server = grpc.aio.server(interceptors=[TelemetryInterceptor(Metrics())])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    codes: dict[str, grpc.StatusCode] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method in ("Refused", "Faulty", "Internal"):
                call = channel.unary_unary(f"/{_SERVICE}/{method}")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(b"")
                codes[method] = refused.value.code()
            stream = channel.unary_stream(f"/{_SERVICE}/Streamed")(b"")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stream:
                    pass
            codes["Streamed"] = refused.value.code()
    finally:
        await server.stop(None)

    finished = {span.name.rsplit("/", 1)[1]: span for span in spans.get_finished_spans()}
    assert set(finished) == {"Refused", "Faulty", "Internal", "Streamed"}
    for method, span in finished.items():
        _assert_nothing_quoted(span)
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == codes[method].value[0], method
    assert finished["Refused"].status.status_code == StatusCode.UNSET
    assert finished["Streamed"].status.status_code == StatusCode.UNSET
    assert finished["Internal"].status.status_code == StatusCode.ERROR
    assert finished["Internal"].status.description == "INTERNAL"
    assert finished["Faulty"].status.status_code == StatusCode.ERROR
    assert finished["Faulty"].status.description == "UNKNOWN"


def test_a_consumer_span_names_the_failure_by_type_only(spans: InMemorySpanExporter) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with (
        pytest.raises(ValueError, match="plan rule"),
        consumer_span("casetrail.project probe", traceparent),
    ):
        _refuse_chained()

    (span,) = spans.get_finished_spans()
    _assert_nothing_quoted(span)
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "ValueError"
