"""Commands: who asks, under which idempotency key, and how refusals are described.

Services subclass the refusals below in their own ``domain/errors.py``; the gRPC entrypoint
turns each kind into one status code (see ``events.grpc_platform.errors``), so domain code
never deals with transport concerns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from uuid import UUID, uuid4, uuid5

from events.catalog.base import CaseEvent
from events.envelope import Actor, EventMetadata, NewEvent
from events.errors import FieldProblem

if TYPE_CHECKING:
    from google.protobuf.message import Message

_COMMAND_NAMESPACE = UUID("5b0f3a4e-6c1d-4f53-9d57-0c8f1e2a9b61")


@lru_cache(maxsize=1024)
def _command_id(service: str, user_id: str, idempotency_key: str) -> UUID:
    # Cached: a command asks for its id several times (retry look-up, event ids, metadata).
    return uuid5(_COMMAND_NAMESPACE, f"{service}\x1f{user_id}\x1f{idempotency_key}")


@dataclass(frozen=True, slots=True)
class CommandContext:
    actor: Actor
    idempotency_key: str
    correlation_id: UUID = field(default_factory=uuid4)
    occurred_at: datetime | None = None
    expected_version: int | None = None

    def command_id(self, service: str) -> UUID:
        """Stable id of this command: the same key from the same actor is the same command."""
        return _command_id(service, self.actor.user_id, self.idempotency_key)

    def new_events(self, service: str, events: Sequence[CaseEvent]) -> list[NewEvent]:
        """Wrap a decision's events with this command's metadata.

        Event ids derive from the command id, so a retried command produces the same ids and the
        store recognises the repeat instead of writing twice.
        """
        command_id = self.command_id(service)
        metadata = EventMetadata(
            source=service,
            actor=self.actor,
            occurred_at=self.occurred_at or datetime.now(UTC),
            correlation_id=self.correlation_id,
            causation_id=command_id,
        )
        # One base per command with the index in the low 16 bits: a command's events sit next
        # to each other in the event-id index, so a 100-event append dirties a few index pages
        # instead of one per event (bench/RESULTS.md). 106 random bits keep ids unique.
        base = uuid5(command_id, "events").int & ~0xFFFF
        if len(events) > 0xFFFF:
            raise ValueError("a command records at most 65,535 events")
        return [
            NewEvent(event=event, metadata=metadata, event_id=UUID(int=base | index))
            for index, event in enumerate(events)
        ]


def derived_id(context: CommandContext, service: str, purpose: str) -> str:
    """An id the command creates (a new case id, say) that a retry creates identically."""
    return uuid5(context.command_id(service), purpose).hex


class CommandRejected(Exception):
    """Base of every refusal. Nothing was written."""

    extra_details: tuple[Message, ...] = ()
    """Status details an entrypoint adds after the ones its kind carries (a service's own
    message listing what the caller needs to decide, say); set on the instance before it is
    re-raised, since domain code knows no wire types."""


class InvalidCommand(CommandRejected):
    """The command's fields are wrong (maps to INVALID_ARGUMENT with field violations)."""

    def __init__(self, violations: Sequence[FieldProblem]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.problem}" for v in self.violations))


class RuleBroken(CommandRejected):
    """A business rule refuses it now (FAILED_PRECONDITION naming the rule)."""

    def __init__(self, rule: str, description: str, **details: str) -> None:
        self.rule = rule
        self.description = description
        self.details = details
        super().__init__(f"{rule}: {description}")


class NotFound(CommandRejected):
    def __init__(self, what: str, identifier: str) -> None:
        self.what = what
        self.identifier = identifier
        super().__init__(f"{what} {identifier!r} not found")


class AlreadyExists(CommandRejected):
    def __init__(self, what: str, identifier: str, description: str = "") -> None:
        self.what = what
        self.identifier = identifier
        super().__init__(description or f"{what} {identifier!r} already exists")


class NotAllowed(CommandRejected):
    """The actor's role may not do this (PERMISSION_DENIED)."""

    def __init__(self, role: str, action: str) -> None:
        self.role = role
        self.action = action
        super().__init__(f"role {role!r} may not {action}")


class VersionConflict(CommandRejected):
    """The case changed since the caller read it (ABORTED: read again, then retry)."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(f"{stream} is at version {actual}, the command expected {expected}")
