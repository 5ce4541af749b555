"""Command refusals become gRPC statuses with rich details, here and only here.

Every status fits gRPC's metadata comfortably (its details travel in a trailer, and a client
refuses trailers over 8 KiB by default): echoed ids are cut to ``MAX_ECHOED_CHARS``, a
BadRequest lists at most ``MAX_VIOLATIONS`` problems (then "and K more"), the message is cut to
``MAX_MESSAGE_BYTES`` and the whole status to ``MAX_STATUS_BYTES``, dropping trailing details.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from casetrail_platform.commands import (
    AlreadyExists,
    CommandRejected,
    InvalidCommand,
    LockHeld,
    NotAllowed,
    NotCaughtUp,
    NotFound,
    RuleBroken,
    VersionConflict,
)
from casetrail_platform.errors import ConcurrencyError, StorageUnavailableError
from casetrail_platform.keys.keyring import ClientErasedError
from events.errors import FieldProblem, InvalidEventError

ERROR_DOMAIN = "casetrail.v1"

MAX_ECHOED_CHARS = 64
MAX_VIOLATIONS = 10
MAX_TEXT_CHARS = 300
MAX_MESSAGE_BYTES = 400
MAX_STATUS_BYTES = 3072
"""The serialized google.rpc.Status; with base64 and the grpc-message header, an answer's
error metadata stays under 5.5 KiB."""

INTERNAL_ERROR = "INTERNAL_ERROR"
SERVER_BUSY = "SERVER_BUSY"


def status_for(error: Exception) -> status_pb2.Status:
    """The google.rpc.Status describing ``error`` (which must be a refusal we know), followed by
    the refusal's ``extra_details``, bounded to ``MAX_STATUS_BYTES``."""
    status = _status_for(error)
    if isinstance(error, CommandRejected):
        status.details.extend(_packed(error.extra_details))
    return bounded(status)


def bounded(status: status_pb2.Status) -> status_pb2.Status:
    """``status`` with its message cut and trailing details dropped until it fits."""
    status.message = _cut_bytes(status.message, MAX_MESSAGE_BYTES)
    while status.ByteSize() > MAX_STATUS_BYTES and status.details:
        del status.details[-1]
    return status


def echoed(value: str) -> str:
    """A caller's value as a refusal may repeat it: at most ``MAX_ECHOED_CHARS`` characters."""
    return value if len(value) <= MAX_ECHOED_CHARS else value[:MAX_ECHOED_CHARS] + "…"


def internal_status(reference: str) -> status_pb2.Status:
    """The answer to a failure no handler expected: a reference to the server's log, nothing
    of the failure itself."""
    return _status(
        code_pb2.INTERNAL,
        f"internal error (reference {reference}); the server log has the details",
        error_details_pb2.ErrorInfo(
            reason=INTERNAL_ERROR, domain=ERROR_DOMAIN, metadata={"reference": reference}
        ),
    )


def busy_status(limit: str, maximum: int, retry_after_seconds: int) -> status_pb2.Status:
    """The refusal of a call over the server's ``limit`` of ``maximum`` calls at once (the
    setting's name): nothing was read or written, and the same call may be sent again."""
    return _status(
        code_pb2.RESOURCE_EXHAUSTED,
        f"the server is answering its limit of {maximum} such calls at once ({limit});"
        f" retry in {retry_after_seconds} s",
        error_details_pb2.ErrorInfo(
            reason=SERVER_BUSY,
            domain=ERROR_DOMAIN,
            metadata={"limit": limit, "maximum": str(maximum)},
        ),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after_seconds)),
    )


def _status_for(error: Exception) -> status_pb2.Status:
    if isinstance(error, ClientErasedError):
        # A caller's refusal, not a server fault: the client was erased while the command was
        # being decided. Named as the services' own refusal is, not the key's owner (a case
        # or client id the caller may not know).
        return _status_for(
            RuleBroken(
                ClientErasedError.RULE,
                "the client was erased; nothing more is recorded about them",
            )
        )
    if isinstance(error, InvalidCommand):
        return _invalid(error.violations)
    if isinstance(error, InvalidEventError):
        return _invalid(error.problems)
    if isinstance(error, RuleBroken):
        return _status(
            code_pb2.FAILED_PRECONDITION,
            str(error),
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=error.rule,
                        subject=_cut(error.details.get("subject", "")),
                        description=_cut(error.description),
                    )
                ]
            ),
            error_details_pb2.ErrorInfo(
                reason=error.rule,
                domain=ERROR_DOMAIN,
                metadata={key: _cut(value) for key, value in error.details.items()},
            ),
        )
    if isinstance(error, NotFound):
        return _status(
            code_pb2.NOT_FOUND,
            f"{error.what} {echoed(error.identifier)!r} not found",
            error_details_pb2.ResourceInfo(
                resource_type=error.what, resource_name=echoed(error.identifier)
            ),
        )
    if isinstance(error, AlreadyExists):
        return _status(
            code_pb2.ALREADY_EXISTS,
            _cut(str(error)),
            error_details_pb2.ResourceInfo(
                resource_type=error.what,
                resource_name=echoed(error.identifier),
                description=_cut(str(error)),
            ),
        )
    if isinstance(error, NotAllowed):
        return _status(
            code_pb2.PERMISSION_DENIED,
            str(error),
            error_details_pb2.ErrorInfo(
                reason=error.reason,
                domain=ERROR_DOMAIN,
                metadata={"role": error.role, "action": error.action, **error.details},
            ),
        )
    if isinstance(error, LockHeld):
        return _status(
            code_pb2.ABORTED,
            _cut(str(error)),
            error_details_pb2.ErrorInfo(
                reason=error.reason,
                domain=ERROR_DOMAIN,
                metadata={"stream": echoed(error.stream), "lock": echoed(error.lock)},
            ),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)),
        )
    if isinstance(error, VersionConflict | ConcurrencyError):
        return _status(code_pb2.ABORTED, str(error))
    if isinstance(error, NotCaughtUp):
        # Retriable: the bus trails the other services by tens of milliseconds.
        return _status(
            code_pb2.UNAVAILABLE,
            _cut(str(error)),
            error_details_pb2.ErrorInfo(
                reason=error.reason,
                domain=ERROR_DOMAIN,
                metadata={"facts": error.what, "subject": echoed(error.subject)},
            ),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)),
        )
    if isinstance(error, StorageUnavailableError):
        # Retriable: the database is restarting or failing over; nothing was refused.
        return _status(
            code_pb2.UNAVAILABLE,
            str(error),
            error_details_pb2.ErrorInfo(
                reason="STORAGE_UNAVAILABLE", domain=ERROR_DOMAIN, metadata={"storage": error.what}
            ),
        )
    raise TypeError(f"no status for {type(error).__name__}")


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    """Abort the call with the status for ``error``; raises (gRPC's abort never returns)."""
    await context.abort_with_status(rpc_status.to_status(status_for(error)))


async def abort_internal(context: grpc.aio.ServicerContext[Any, Any], reference: str) -> None:
    """Abort the call with ``internal_status(reference)``; raises."""
    await context.abort_with_status(rpc_status.to_status(internal_status(reference)))


REFUSALS: tuple[type[Exception], ...] = (
    CommandRejected,
    ClientErasedError,
    InvalidEventError,
    ConcurrencyError,
    StorageUnavailableError,
)
"""Exceptions that are answers to the caller, not server faults."""


def _invalid(problems: Sequence[FieldProblem]) -> status_pb2.Status:
    """INVALID_ARGUMENT with the first problems (as many as ``MAX_VIOLATIONS`` and
    ``_VIOLATIONS_BUDGET`` allow), then one ``request`` violation counting the others."""
    shown: list[FieldProblem] = []
    size = 0
    for problem in problems:
        cut = FieldProblem(_cut(problem.field), _cut(problem.problem))
        size += len(cut.field.encode()) + len(cut.problem.encode()) + 8
        if len(shown) == MAX_VIOLATIONS or size > _VIOLATIONS_BUDGET:
            break
        shown.append(cut)
    message = "; ".join(f"{p.field}: {p.problem}" for p in shown)
    if len(shown) < len(problems):
        message = f"{len(problems)} problems, the first {len(shown)} listed: {message}"
        shown.append(FieldProblem("request", f"and {len(problems) - len(shown)} more problems"))
    return _status(code_pb2.INVALID_ARGUMENT, message, _bad_request(shown))


_VIOLATIONS_BUDGET = 2048
"""Bytes of field names and descriptions in one BadRequest; with the message it stays under
``MAX_STATUS_BYTES``."""


def _bad_request(problems: Iterable[FieldProblem]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=problem.field, description=problem.problem
            )
            for problem in problems
        ]
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"


def _cut_bytes(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def _status(code: int, message: str, *details: Message) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message, details=_packed(details))


def _packed(details: Iterable[Message]) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return packed
