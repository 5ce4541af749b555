"""Errors of the event bus, and which failures are worth retrying."""

from __future__ import annotations

import sys

from casetrail_platform.errors import EventPlatformError, StorageUnavailableError


class BusError(EventPlatformError):
    """Base of every error raised by the event bus."""


class PublishError(BusError):
    """The bus did not acknowledge every record of a publish call.

    Some records may have been written anyway; the caller publishes the whole batch again
    (consumers are idempotent), it never assumes a partial success.

    ``refused``: the bus refused a record of it for good (e.g. too large for the topic), so
    sending the same records again cannot succeed; the outbox relay then finds the record at
    fault and parks it (``casetrail_platform.parking``) instead of retrying for ever.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class TopicConfigurationError(BusError):
    """A topic exists with settings that break the bus's guarantees (e.g. partition count)."""


class RetriableHandlerError(BusError):
    """Raised by a subscriber's handler when a later attempt may succeed (a database that is
    briefly unreachable, a lock timeout). The subscriber retries with backoff instead of
    dead-lettering the message."""


class BarrierNotReachedError(RetriableHandlerError):
    """Raised by a handler whose only failure is a barrier not reached yet: a consumer group
    whose progress it waits for (``EventSubscriber.caught_up``) has not applied all the bus
    holds of the case. The group gets there (on the embedded bus once the relays have refilled
    it at a start, which takes minutes for a large store), so the message is retried with the
    backoff, up to its ceiling, for as long as that takes: never counted against
    ``RetryPolicy.max_attempts`` nor dead-lettered (the embedded bus keeps dead letters in
    memory only, so a closure's follow-up dead-lettered there was lost)."""


def is_retriable(error: BaseException) -> bool:
    """Whether a handler or client failure may succeed if simply tried again.

    Besides ``RetriableHandlerError``, client errors that carry a ``retriable`` flag (every
    aiokafka error does) are trusted, and connection or timeout failures count as transient:
    dead-lettering an event because its consumer's database restarted would break the
    per-case order for nothing.
    """
    if isinstance(error, RetriableHandlerError) or is_outage(error):
        return True
    flag = getattr(error, "retriable", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(error, ConnectionError | TimeoutError)


def is_outage(error: BaseException) -> bool:
    """Whether a handler failed because its own storage is away (a database restarting or
    failing over), not because of the event. Such failures are retried for as long as the
    outage lasts (the consumer pauses), never counted against the retry policy nor
    dead-lettered: the event is fine and will apply once the database is back."""
    if isinstance(error, StorageUnavailableError):
        return True
    # Without importing the drivers: if one was never imported, this is not its error.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        return True
    sqlite3 = sys.modules.get("sqlite3")
    return (
        sqlite3 is not None
        and isinstance(error, sqlite3.OperationalError)
        and getattr(error, "sqlite_errorcode", 0) & 0xFF in _SQLITE_AWAY
    )


_SQLITE_AWAY = frozenset({5, 6, 7, 10, 13, 14})
"""SQLite's primary result codes of a database that is away for now, not of a bad statement:
BUSY and LOCKED (another process holds the file past the busy timeout, e.g. ``casetrail
rebuild`` beside a running service), NOMEM, IOERR, FULL (a full disk) and CANTOPEN. Extended
codes carry the primary one in their low byte. Any other OperationalError (a missing table, a
syntax error) is the code's fault and stays one."""
