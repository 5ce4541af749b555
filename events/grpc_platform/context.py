"""From the wire's CommandContext / QueryContext to the domain's, with field-level errors."""

from __future__ import annotations

from datetime import UTC
from uuid import UUID

from casetrail.common.v1 import common_pb2
from events.catalog.base import Role
from events.commands import CommandContext, InvalidCommand
from events.envelope import Actor
from events.errors import FieldProblem

MAX_KEY_LENGTH = 200


def actor_from(message: common_pb2.Actor, field: str) -> Actor:
    problems = _actor_problems(message, field)
    if problems:
        raise InvalidCommand(problems)
    return Actor(message.user_id, Role(message.role))


def command_context_from(message: common_pb2.CommandContext) -> CommandContext:
    problems = _actor_problems(message.actor, "context.actor")
    key = message.idempotency_key
    if not key or len(key) > MAX_KEY_LENGTH:
        problems.append(
            FieldProblem(
                "context.idempotency_key", f"required, at most {MAX_KEY_LENGTH} characters"
            )
        )
    correlation: UUID | None = None
    if message.correlation_id:
        try:
            correlation = UUID(message.correlation_id)
        except ValueError:
            problems.append(FieldProblem("context.correlation_id", "must be a UUID"))
    if message.expected_version < 0:
        problems.append(FieldProblem("context.expected_version", "must not be negative"))
    if problems:
        raise InvalidCommand(problems)
    occurred_at = (
        message.occurred_at.ToDatetime(tzinfo=UTC) if message.HasField("occurred_at") else None
    )
    context = CommandContext(
        actor=Actor(message.actor.user_id, Role(message.actor.role)),
        idempotency_key=key,
        occurred_at=occurred_at,
        expected_version=message.expected_version or None,
    )
    if correlation is not None:
        context = CommandContext(
            actor=context.actor,
            idempotency_key=key,
            correlation_id=correlation,
            occurred_at=occurred_at,
            expected_version=context.expected_version,
        )
    return context


def _actor_problems(message: common_pb2.Actor, field: str) -> list[FieldProblem]:
    problems = []
    if not message.user_id:
        problems.append(FieldProblem(f"{field}.user_id", "required"))
    if message.role not in {role.value for role in Role}:
        allowed = ", ".join(role.value for role in Role)
        problems.append(FieldProblem(f"{field}.role", f"must be one of: {allowed}"))
    return problems
