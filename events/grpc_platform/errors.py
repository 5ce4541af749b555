"""Command refusals become gRPC statuses with rich details, here and only here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from events.commands import (
    AlreadyExists,
    CommandRejected,
    InvalidCommand,
    NotAllowed,
    NotFound,
    RuleBroken,
    VersionConflict,
)
from events.errors import ConcurrencyError, FieldProblem, InvalidEventError

ERROR_DOMAIN = "casetrail.v1"


def status_for(error: Exception) -> status_pb2.Status:
    """The google.rpc.Status describing ``error`` (which must be a refusal we know), followed by
    the refusal's ``extra_details``."""
    status = _status_for(error)
    if isinstance(error, CommandRejected):
        status.details.extend(_packed(error.extra_details))
    return status


def _status_for(error: Exception) -> status_pb2.Status:
    if isinstance(error, InvalidCommand):
        return _status(code_pb2.INVALID_ARGUMENT, str(error), _bad_request(error.violations))
    if isinstance(error, InvalidEventError):
        return _status(code_pb2.INVALID_ARGUMENT, str(error), _bad_request(error.problems))
    if isinstance(error, RuleBroken):
        return _status(
            code_pb2.FAILED_PRECONDITION,
            str(error),
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=error.rule,
                        subject=error.details.get("subject", ""),
                        description=error.description,
                    )
                ]
            ),
            error_details_pb2.ErrorInfo(
                reason=error.rule, domain=ERROR_DOMAIN, metadata=error.details
            ),
        )
    if isinstance(error, NotFound):
        return _status(
            code_pb2.NOT_FOUND,
            str(error),
            error_details_pb2.ResourceInfo(
                resource_type=error.what, resource_name=error.identifier
            ),
        )
    if isinstance(error, AlreadyExists):
        return _status(
            code_pb2.ALREADY_EXISTS,
            str(error),
            error_details_pb2.ResourceInfo(
                resource_type=error.what, resource_name=error.identifier, description=str(error)
            ),
        )
    if isinstance(error, NotAllowed):
        return _status(
            code_pb2.PERMISSION_DENIED,
            str(error),
            error_details_pb2.ErrorInfo(
                reason="ROLE_NOT_ALLOWED",
                domain=ERROR_DOMAIN,
                metadata={"role": error.role, "action": error.action},
            ),
        )
    if isinstance(error, VersionConflict | ConcurrencyError):
        return _status(code_pb2.ABORTED, str(error))
    raise TypeError(f"no status for {type(error).__name__}")


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    """Abort the call with the status for ``error``; raises (gRPC's abort never returns)."""
    await context.abort_with_status(rpc_status.to_status(status_for(error)))


REFUSALS: tuple[type[Exception], ...] = (CommandRejected, InvalidEventError, ConcurrencyError)
"""Exceptions that are answers to the caller, not server faults."""


def _bad_request(problems: Iterable[FieldProblem]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=problem.field, description=problem.problem
            )
            for problem in problems
        ]
    )


def _status(code: int, message: str, *details: Message) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message, details=_packed(details))


def _packed(details: Iterable[Message]) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return packed
