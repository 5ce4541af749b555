"""Tracing for tests: one in-memory span exporter per test process.

OpenTelemetry accepts a process's tracer provider once, so every test that looks at spans
shares this one; tracing is switched on only inside ``traced()``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from casetrail_platform.telemetry import tracing


@functools.cache
def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@contextmanager
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into a cleared in-memory exporter, until the block ends."""
    provider, exporter = _provider()
    exporter.clear()
    tracing.enable_tracing(provider)
    try:
        yield exporter
    finally:
        tracing.disable_tracing()
