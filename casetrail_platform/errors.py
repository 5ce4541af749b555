"""Errors of the event platform (store, bus, hosting). Each names what was wrong so callers
can report it precisely. Their root is the catalog's ``EventError``, like the catalog's
own errors (``events.errors``).
"""

from __future__ import annotations

from events.errors import EventError


class EventPlatformError(EventError):
    """Base of every error raised by the event platform."""


class ConcurrencyError(EventPlatformError):
    """The stream's current version is not the one the writer expected."""

    def __init__(
        self, stream: str, expected_version: int, actual_version: int, message: str = ""
    ) -> None:
        self.stream = stream
        self.expected_version = expected_version
        self.actual_version = actual_version
        moved = f"stream {stream!r} is at version {actual_version}, expected {expected_version}"
        super().__init__(message or moved)


class GuardLockHeld(ConcurrencyError):
    """The lock an append's guard names (``StreamVersion.lock``) is held exclusively by
    another section (an erasure of the opening's client): nothing was written. A lost race
    like the guarded stream's move, told apart so that a command still refused when its retry
    budget is spent is answered naming the lock (``commands.LockHeld``), not a version."""

    def __init__(self, stream: str, expected_version: int, lock: str) -> None:
        # The guarded stream's version is not known (not read): -1.
        super().__init__(
            stream, expected_version, -1, f"the lock {lock!r} of guarded stream {stream!r} is held"
        )
        self.lock = lock


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


class StorageConfigurationError(EventPlatformError):
    """The database refuses what this process is configured to do (a role missing, a
    membership or grant not given): an operator must fix the database or the deployment.
    Unlike ``StorageUnavailableError`` it is never retried as an outage; the message says what
    to configure (the driver's error is chained as its cause)."""

    retriable = False


class CommandAlreadyRecorded(EventPlatformError):
    """Another append already recorded this command (its id is in the store's table of
    commands), with other events: a request sent under the same idempotency key that won a
    race, maybe on another stream or replica. Nothing of this append was written; the caller
    reads what the command recorded (``read_by_causation``) and answers as a retry would."""

    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        super().__init__(f"command {command_id} is already recorded with other events")
