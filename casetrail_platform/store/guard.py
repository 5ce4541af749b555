"""What every event store checks before writing: an event must be storable on every backend
and publishable on every bus (README, "Limits").

The edge refuses such input long before (``casetrail_platform.grpc_platform.edge``); this is the
floor under every writer that forgets: no NUL anywhere (PostgreSQL text and jsonb cannot hold it, so
read models and projections would refuse the event for good) and no event over
``MAX_EVENT_BYTES`` (Kafka would refuse the record for good). Both adapters call it first, so
they refuse the same events with the same ``InvalidEventError`` and write nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from casetrail_platform.limits import MAX_EVENT_BYTES
from events.envelope import NewEvent
from events.errors import FieldProblem, InvalidEventError
from events.registry import encode

_ESCAPED_NUL = b"\\u0000"


class UnstorableEventError(InvalidEventError, ValueError):
    """The event cannot be stored everywhere or published (INVALID_ARGUMENT at the edge)."""


def storable_data(stream: str, events: Sequence[NewEvent]) -> list[bytes]:
    """Each event's encoded data, after checking that all of them may be stored."""
    encoded = []
    for new in events:
        data = encode(new.event)
        texts = {
            "stream": stream,
            "subject": new.event.subject,
            "metadata.source": new.metadata.source,
            "metadata.actor.user_id": new.metadata.actor.user_id,
        }
        problems = [
            FieldProblem(field, "must not contain NUL characters")
            for field, text in texts.items()
            if "\x00" in text
        ]
        # JSON writes a NUL as \u0000; a backslash in the text before "u0000" is escaped, so
        # a second look at the decoded values tells which it is.
        if _ESCAPED_NUL in data:
            problems.extend(
                FieldProblem(path, "must not contain NUL characters")
                for path in _paths_with_nul(json.loads(data), "")
            )
        size = len(data) + sum(len(text.encode(errors="replace")) for text in texts.values())
        if size > MAX_EVENT_BYTES:
            problems.append(
                FieldProblem(
                    "request",
                    f"the event it records would take {size} bytes; at most {MAX_EVENT_BYTES}",
                )
            )
        if problems:
            raise UnstorableEventError(new.event.event_type, problems)
        encoded.append(data)
    return encoded


def _paths_with_nul(value: object, path: str) -> list[str]:
    if isinstance(value, str):
        return [path or "data"] if "\x00" in value else []
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            for found in _paths_with_nul(item, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(value, list):
        return [
            found
            for index, item in enumerate(value)
            for found in _paths_with_nul(item, f"{path}[{index}]")
        ]
    return []
