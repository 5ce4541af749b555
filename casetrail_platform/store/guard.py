"""What every event store checks before writing: an event must be storable on every backend
and publishable on every bus (README, "Limits").

The edge refuses such input long before (``casetrail_platform.grpc_platform.edge``); this is the
floor under every writer that forgets: no NUL anywhere (PostgreSQL text and jsonb cannot hold it, so
read models and projections would refuse the event for good), checked on the data as encoded
(``storable_data``), and no event over ``MAX_EVENT_BYTES`` as it is stored and published (Kafka
would refuse the record for good), checked on the data as sealed (``require_publishable``): a
sealed value takes several times the bytes of its text. Both adapters call them in that order
before writing (``rows.checked_data``), so they refuse the same events with the same
``InvalidEventError`` and write nothing.

It does not validate each event against its model again (an event built without validation,
``model_construct``, would be written): measured on 2026-12-05, ``model_validate_json`` of the
data already encoded here costs 1.7 us per ``contact.logged`` (2.5 us median over the catalog's
examples, 6.3 us for ``plan.drafted``), and the issue 10 appends (8 writers, 100 events per
commit, ledger on) ran 0.90x on SQLite and 0.81x on PostgreSQL with it (client CPU per event
+1.0 and +3.7 us), a cost that shows. Events are built validated instead: ``CaseEvent.updated``
changes one, and no ``model_copy``/``model_construct`` is allowed outside tests (tested).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from casetrail_platform.limits import MAX_EVENT_BYTES
from events.cloudevents import (
    MAX_IDENTIFIER_CHARS,
    MAX_STREAM_CHARS,
    envelope_text_problem,
)
from events.envelope import NewEvent
from events.errors import FieldProblem, InvalidEventError
from events.registry import encode

_ESCAPED_NUL = b"\\u0000"
_TEXT_BOUNDS = {
    "stream": MAX_STREAM_CHARS,
    "subject": MAX_IDENTIFIER_CHARS,
    "metadata.actor.user_id": MAX_IDENTIFIER_CHARS,
}
"""Each envelope text's length bound as subscribers decode it (the source has none)."""


class UnstorableEventError(InvalidEventError, ValueError):
    """The event cannot be stored everywhere or published (INVALID_ARGUMENT at the edge)."""


def storable_data(stream: str, events: Sequence[NewEvent]) -> list[bytes]:
    """Each event's encoded data, after checking that none holds a NUL and that its envelope's
    texts are ones every subscriber decodes (``envelope_text_problem``: bounded, no control
    characters); its size is checked once sealed, by ``require_publishable``."""
    encoded = []
    for new in events:
        data = encode(new.event)
        problems = [
            FieldProblem(field, problem)
            for field, text in _envelope_texts(stream, new).items()
            if (problem := envelope_text_problem(text, _TEXT_BOUNDS.get(field))) is not None
        ]
        # JSON writes a NUL as \u0000; a backslash in the text before "u0000" is escaped, so
        # a second look at the decoded values tells which it is.
        if _ESCAPED_NUL in data:
            problems.extend(
                FieldProblem(path, "must not contain NUL characters")
                for path in _paths_with_nul(json.loads(data), "")
            )
        if problems:
            raise UnstorableEventError(new.event.event_type, problems)
        encoded.append(data)
    return encoded


_HEADER_ALLOWANCE = 1024
"""Bytes a published event takes beyond its data and the texts counted one by one: the
CloudEvents headers' names and fixed-size values (ids, times, numbers, type and schema) and
Kafka's record framing, with room to spare (about 700 in all)."""


def require_publishable(stream: str, events: Sequence[NewEvent], stored: Sequence[bytes]) -> None:
    """Refuse the batch unless each event, as stored (``stored``: its data sealed) and as
    published (that data, its CloudEvents headers, its key), takes at most ``MAX_EVENT_BYTES``.

    Measured after sealing: a sealed leaf is a prefix and the base64 of a nonce, the ciphertext
    and a tag, so a plan of many one-word objectives grows twentyfold; measured before, 32 KB of
    request became an 869 KB record that Kafka would refuse while the in-process bus delivers it.
    The bound is a quarter of Kafka's default 1 MiB so that an event of an older schema version,
    published upcast and sealed again beside its stored form in base64, still fits."""
    for new, data in zip(events, stored, strict=True):
        texts = _envelope_texts(stream, new)
        # The subject travels twice: as the ce_subject header and as the record's key.
        size = (
            len(data)
            + sum(len(text.encode(errors="replace")) for text in texts.values())
            + len(texts["subject"].encode(errors="replace"))
            + _HEADER_ALLOWANCE
        )
        if size > MAX_EVENT_BYTES:
            raise UnstorableEventError(
                new.event.event_type,
                [
                    FieldProblem(
                        "request",
                        f"the event it records would take {size} bytes as stored and published"
                        f" (sensitive values sealed); at most {MAX_EVENT_BYTES}",
                    )
                ],
            )


def _envelope_texts(stream: str, new: NewEvent) -> dict[str, str]:
    """The free texts an event's envelope stores and publishes beside its data, by field."""
    return {
        "stream": stream,
        "subject": new.event.subject,
        "metadata.source": new.metadata.source,
        "metadata.actor.user_id": new.metadata.actor.user_id,
    }


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
