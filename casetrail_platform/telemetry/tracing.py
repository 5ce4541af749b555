"""OpenTelemetry traces, off unless configured, and the W3C trace context of a command.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``console``, or ``otlp`` when
the ``opentelemetry-exporter-otlp`` package is installed; the SDK reads its own ``OTEL_*``
variables for endpoints, sampling and resource attributes), or when a test installs a tracer
provider with ``enable_tracing``. Off (the default), every hook checks one module flag and
does nothing else: no span objects, no header parsing.

The trace context travels as a W3C ``traceparent`` string: in gRPC metadata (``traceparent``)
into a command, with the stored event (outside its hashed history, see ``events.envelope``)
through the outbox, and on the bus as the CloudEvents distributed-tracing extension
(``ce_traceparent`` in Kafka binary mode), so that a projection applying the event starts its
span as a child of the command that recorded it.

Spans never record an exception: OpenTelemetry's default writes the message and the whole
chained traceback into span events, and a refusal raised while handling a pydantic error
carries the request's values in its context. A span's status is set from what went wrong, by
name only: the gRPC status code of a call, the exception's type of an event applied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from events.envelope import RecordedEvent

_PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"

_enabled = False


def tracing_enabled() -> bool:
    return _enabled


def configure_tracing(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Install a tracer provider for this process if ``OTEL_TRACES_EXPORTER`` asks for one;
    returns whether tracing is on. Call once per process, from its composition root."""
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none") or environ.get("OTEL_SDK_DISABLED", "") == "true":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter: Any
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError as missing:
            raise ValueError(
                "OTEL_TRACES_EXPORTER=otlp needs the opentelemetry-exporter-otlp package"
            ) from missing
        exporter = OTLPSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter_name!r}: use console, otlp or none")
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    enable_tracing(provider)
    return True


def enable_tracing(provider: trace.TracerProvider) -> None:
    """Use ``provider`` for every span of this process from now on (tests: an SDK provider
    with an in-memory exporter)."""
    global _enabled
    trace.set_tracer_provider(provider)
    _enabled = True


def flush_tracing(seconds: float) -> bool:
    """Export the spans not yet sent and shut the provider down, waiting at most ``seconds``
    (an OTLP collector that hangs must not hold a stopping process); whether it finished.
    The provider's own exit hook then has nothing left to send."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if not _enabled or shutdown is None:
        return True
    import threading

    # A daemon thread: one still exporting does not keep the process.
    worker = threading.Thread(target=shutdown, name="casetrail-tracing-flush", daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive()


def disable_tracing() -> None:
    global _enabled
    _enabled = False


def tracer() -> trace.Tracer:
    return trace.get_tracer("casetrail")


def context_from_traceparent(traceparent: str | bytes | None) -> Context | None:
    """The remote parent named by a W3C ``traceparent`` (``None`` if absent or malformed)."""
    if not traceparent:
        return None
    text = traceparent.decode("ascii", "replace") if isinstance(traceparent, bytes) else traceparent
    context = _PROPAGATOR.extract({TRACEPARENT: text})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, if tracing is on and a span is active."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (for logs), or ``None``."""
    if not _enabled:
        return None
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


@contextmanager
def server_span(name: str, traceparent: str | None, **attributes: str) -> Iterator[Span | None]:
    """A SERVER span for an incoming call (a child of the caller's ``traceparent`` if any);
    ``None`` and no work at all while tracing is off."""
    if not _enabled:
        yield None
        return
    with tracer().start_as_current_span(
        name,
        context=context_from_traceparent(traceparent),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def projection_span(projection: str, recorded: RecordedEvent) -> AbstractContextManager[None]:
    """The span of applying ``recorded`` to ``projection``: a child of the command that
    recorded it (nothing while tracing is off, or when the event carries no trace)."""
    if not _enabled or recorded.trace_parent is None:
        return nullcontext()
    return consumer_span(
        f"casetrail.project {projection}",
        recorded.trace_parent,
        **{"casetrail.event_type": recorded.event_type, "casetrail.stream": recorded.stream},
    )


@contextmanager
def consumer_span(name: str, traceparent: str | bytes | None, **attributes: str) -> Iterator[None]:
    """A CONSUMER span for applying one event from the bus, a child of the command that
    recorded it (its ``traceparent``); no work at all while tracing is off."""
    if not _enabled:
        yield
        return
    with tracer().start_as_current_span(
        name,
        context=context_from_traceparent(traceparent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as failure:
            mark_failed(span, type(failure).__name__)
            raise


def mark_failed(span: Span, what: str) -> None:
    """Set ``span``'s status to ERROR described by ``what``: a status code's or an exception
    type's name, never a message (see the module's docstring)."""
    span.set_status(Status(StatusCode.ERROR, what))
