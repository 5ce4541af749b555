"""Errors of the event platform. Each names what was wrong so callers can report it precisely."""

from __future__ import annotations

from dataclasses import dataclass


class EventPlatformError(Exception):
    """Base of every error raised by the event platform."""


@dataclass(frozen=True)
class FieldProblem:
    field: str
    problem: str


class InvalidEventError(EventPlatformError):
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


class ConcurrencyError(EventPlatformError):
    """The stream's current version is not the one the writer expected."""

    def __init__(self, stream: str, expected_version: int, actual_version: int) -> None:
        self.stream = stream
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"stream {stream!r} is at version {actual_version}, expected {expected_version}"
        )


class DuplicateEventIdError(EventPlatformError):
    """An event id was reused for a different event (a true duplicate is not an error)."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"event id {event_id} already stored with different content")


class StorageUnavailableError(EventPlatformError):
    """The service's database cannot be reached right now (restarting, failing over, network).

    Nothing is known to be wrong with the request: it may succeed if sent again later, so
    gRPC answers ``UNAVAILABLE`` and bus consumers pause and retry instead of dead-lettering.
    The message names only what is away, never the driver's text (the cause is chained for
    the logs).
    """

    retriable = True

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"the {what} is unavailable; retry later")
