"""Process logging: text for people, or one JSON object per line for log collectors.

``CASETRAIL_LOG_FORMAT=json`` (default ``text``). A JSON line carries the time, level,
logger, message, the trace id of the current span (when tracing is on) and the correlation
id of the command being served (``correlation``), plus any ``extra`` fields, except those
named like a field the catalog marks ``x-casetrail-sensitive``: their values are replaced by
``"[redacted]"``. casetrail's own messages never quote event data or request values (errors
are logged by type and place, see ``casetrail_platform.grpc_platform.server``); the redaction guards
against an ``extra`` that would.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from casetrail_platform.telemetry.tracing import current_trace_id

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "casetrail_correlation_id", default=None
)
REDACTED = "[redacted]"
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


@contextmanager
def correlation(correlation_id: str | None) -> Iterator[None]:
    """Log lines written inside carry ``correlation_id``."""
    token = _correlation.set(correlation_id or None)
    try:
        yield
    finally:
        _correlation.reset(token)


def current_correlation_id() -> str | None:
    return _correlation.get()


_json_logs = False


def correlation_logged() -> bool:
    """Whether log lines carry the correlation id (JSON logs): if not, nobody needs it set."""
    return _json_logs


@functools.cache
def sensitive_field_names() -> frozenset[str]:
    """Names of the fields any catalog event marks ``x-casetrail-sensitive``."""
    from events.catalog_registry import current_models, legacy_models

    return frozenset(
        name for model in (*current_models(), *legacy_models()) for name in model.sensitive_fields()
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        correlation_id = _correlation.get()
        if correlation_id is not None:
            line["correlation_id"] = correlation_id
        sensitive = sensitive_field_names()
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            line[key] = REDACTED if key in sensitive else _plain(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def configure_logging(environ: Mapping[str, str] = os.environ) -> None:
    """The process's root logging: ``CASETRAIL_LOG_LEVEL`` (``INFO``) and
    ``CASETRAIL_LOG_FORMAT`` (``text`` or ``json``)."""
    log_format = environ.get("CASETRAIL_LOG_FORMAT", "text").strip().lower()
    if log_format not in ("text", "json"):
        raise ValueError(f"CASETRAIL_LOG_FORMAT={log_format!r}: use text or json")
    global _json_logs
    _json_logs = log_format == "json"
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(environ.get("CASETRAIL_LOG_LEVEL", "INFO"))
