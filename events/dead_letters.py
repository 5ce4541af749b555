"""The dead-letter contract: the ``casetrail_dlq_*`` headers a consumer group adds to a
record it gave up on, and the reasons it names. Published in the AsyncAPI document; the
platform writes and reads them (``casetrail_platform.bus.deadletter``).
"""

from __future__ import annotations

from enum import StrEnum

HEADER_PREFIX = "casetrail_dlq_"
REASON = "casetrail_dlq_reason"
GROUP = "casetrail_dlq_group"
TOPIC = "casetrail_dlq_topic"
PARTITION = "casetrail_dlq_partition"
OFFSET = "casetrail_dlq_offset"
EXCEPTION = "casetrail_dlq_exception"
ATTEMPTS = "casetrail_dlq_attempts"
TRUNCATED = "casetrail_dlq_truncated"
"""On a dead letter whose record's value was too large for the dead-letter topic: the letter
holds only the value's first bytes, and this header the whole value's size in bytes. Such a
letter is never replayed (``casetrail dlq replay`` names it instead)."""
REPLAYED = "casetrail_dlq_replayed"
"""On a record a replay (``casetrail dlq replay``) put back on its topic: it comes after later
events of its case, so consumers' ordering guards hand it over as a repeat, never taking it as
where its stream starts."""


class DeadLetterReason(StrEnum):
    UNDECODABLE = "undecodable"
    """Not a CloudEvent this service can read (bad bytes, missing attributes)."""
    INVALID_EVENT = "invalid-event"
    """A CloudEvent whose type is unknown, has no upcaster, or whose data breaks the schema."""
    HANDLER_FAILED = "handler-failed"
    """The handler raised an error that retrying cannot fix."""
    RETRIES_EXHAUSTED = "retries-exhausted"
    """The handler kept raising retriable errors until the retry policy gave up."""
