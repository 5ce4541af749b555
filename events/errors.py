"""Errors of the event catalog: an event that does not fit it. Each names what was wrong so
callers can report it precisely. The platform's errors live in ``casetrail_platform.errors``,
under the same root ``EventError``."""

from __future__ import annotations

from dataclasses import dataclass


class EventError(Exception):
    """Root of every casetrail event error: the catalog's (below) and the platform's
    (``casetrail_platform.errors.EventPlatformError``)."""


@dataclass(frozen=True)
class FieldProblem:
    field: str
    problem: str


class InvalidEventError(EventError):
    """An event does not fit the catalog: unknown type, bad data or no upcaster."""

    def __init__(self, event_type: str, problems: list[FieldProblem]) -> None:
        self.event_type = event_type
        self.problems = problems
        described = "; ".join(f"{p.field}: {p.problem}" for p in problems)
        super().__init__(f"invalid event {event_type!r}: {described}")


class UnknownEventTypeError(InvalidEventError):
    def __init__(self, event_type: str) -> None:
        super().__init__(event_type, [FieldProblem("type", "not in the event catalog")])


class MissingUpcasterError(InvalidEventError):
    def __init__(self, event_type: str, from_version: int, current_version: int) -> None:
        self.from_version = from_version
        super().__init__(
            event_type,
            [
                FieldProblem(
                    "schema_version",
                    f"no upcaster from version {from_version} to {current_version}",
                )
            ],
        )


class UnreadableStoredEventError(EventError):
    """An event its store holds no longer decodes (data a reader refuses: an older release
    stored it past a model's rules, a sealed value that does not open). A fault of the server's
    data, never of the caller's input: answered INTERNAL with a reference to the log, not
    INVALID_ARGUMENT quoting the stored event's fields as if the caller had sent them. The
    decoding error is its cause."""

    def __init__(self, stream: str, sequence: int, error: InvalidEventError) -> None:
        self.stream = stream
        self.sequence = sequence
        self.problems = error.problems
        super().__init__(f"event {sequence} of stream {stream!r} does not decode: {error}")
