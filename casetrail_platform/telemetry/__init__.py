"""Observability of a casetrail process: Prometheus metrics, OpenTelemetry traces, JSON logs.

Hooks elsewhere stay one line each and call in here: ``metrics.process_metrics()`` for the
numbers, ``tracing`` for spans and the W3C trace context, ``logs.configure_logging`` once per
process. Nothing happens at import time.
"""
