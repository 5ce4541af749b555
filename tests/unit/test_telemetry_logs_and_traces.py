"""JSON log lines (trace and correlation ids, no sensitive values) and the W3C trace context
helpers that carry a command's trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from uuid import uuid4

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from casetrail.common.v1 import common_pb2
from casetrail_platform.telemetry import tracing
from casetrail_platform.telemetry.grpc_server import logged_correlation_id
from casetrail_platform.telemetry.logs import (
    REDACTED,
    JsonFormatter,
    correlation,
    sensitive_field_names,
)
from tests.support.tracing import traced


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with traced() as exporter:
        yield exporter


def _line(**extra: object) -> dict[str, object]:
    record = logging.LogRecord(
        "casetrail.test", logging.INFO, __file__, 1, "hello %s", ("you",), None
    )
    record.__dict__.update(extra)
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_a_json_line_names_the_correlation_and_redacts_sensitive_extras() -> None:
    sensitive = sorted(sensitive_field_names())
    assert sensitive, "the catalog marks some fields x-casetrail-sensitive"
    with correlation("corr-1"):
        line = _line(**{sensitive[0]: "lives with a violent partner", "stream": "case-1"})
    assert line["message"] == "hello you"
    assert line["correlation_id"] == "corr-1"
    assert line[sensitive[0]] == REDACTED
    assert line["stream"] == "case-1"
    assert "lives with" not in json.dumps(line)


def test_tracing_off_costs_no_span_and_no_header() -> None:
    tracing.disable_tracing()
    with tracing.server_span("/casetrail.x/Y", None) as span:
        assert span is None
        assert tracing.current_traceparent() is None


def test_a_child_span_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.server_span("/casetrail.intake.v1.IntakeService/OpenCase", caller):
        inside = tracing.current_traceparent()
        with correlation("corr-2"):
            line = _line()
    assert inside is not None
    assert inside.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    with tracing.consumer_span("casetrail.project case_view", inside.encode()):
        pass
    finished = spans.get_finished_spans()
    assert {span.context.trace_id for span in finished[-2:]} == {0x0AF7651916CD43DD8448EB211C80319C}
    assert finished[-1].parent is not None
    assert finished[-1].parent.span_id == finished[-2].context.span_id
    assert tracing.context_from_traceparent("garbage") is None


def test_a_call_logs_its_correlation_id_only_once_it_reads_as_a_uuid() -> None:
    """The telemetry interceptor runs before the edge checks the request: a correlation id the
    edge would refuse (any text, up to the 4 MB a message may hold) never reaches a log line."""

    def request(correlation_id: str) -> SimpleNamespace:
        return SimpleNamespace(context=common_pb2.CommandContext(correlation_id=correlation_id))

    given = uuid4()
    assert logged_correlation_id(request(str(given))) == str(given)
    assert logged_correlation_id(request(f"urn:uuid:{given.hex}")) == str(given)
    for refused in ("", "corr-1", "x" * 1_000_000, f"{given}\u2028forged line"):
        assert logged_correlation_id(request(refused)) is None
    assert logged_correlation_id(object()) is None
