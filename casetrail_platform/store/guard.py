"""What every event store checks before writing: an event must be storable on every backend
and publishable on every bus (README, "Limits").

The edge refuses such input long before (``casetrail_platform.grpc_platform.edge``); this is the
floor under every writer that forgets: the arguments every backend can hold (``valid_arguments``:
versions within PostgreSQL's integer, each event id once), no NUL anywhere (PostgreSQL text and
jsonb cannot hold it, so read models and projections would refuse the event for good) and an
envelope each backend stores and reads back alike, checked on the data as encoded
(``storable_data``), and no event over ``MAX_EVENT_BYTES`` as it is stored and published (Kafka
would refuse the record for good), checked on the data as sealed (``require_publishable``): a
sealed value takes several times the bytes of its text. Both adapters call them in that order
before writing (``rows.checked_data``), so they refuse the same events with the same
``InvalidEventError`` (or ``ValueError`` for an argument no event carries) and write nothing.

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
from datetime import UTC

from casetrail_platform.limits import EARLIEST_MOMENT, LATEST_MOMENT, MAX_EVENT_BYTES, MOMENT_RANGE
from casetrail_platform.store.port import ANY_VERSION, NO_STREAM, StreamVersion
from events.cloudevents import (
    MAX_IDENTIFIER_CHARS,
    MAX_STREAM_CHARS,
    MAX_SUBJECT_CHARS,
    envelope_text_problem,
)
from events.envelope import NewEvent
from events.errors import FieldProblem, InvalidEventError
from events.registry import encode

_ESCAPED_NUL = b"\\u0000"
_TEXT_BOUNDS = {
    "stream": MAX_STREAM_CHARS,
    "guard.stream": MAX_STREAM_CHARS,
    "subject": MAX_SUBJECT_CHARS,
    "metadata.actor.user_id": MAX_IDENTIFIER_CHARS,
}
"""Each envelope text's length bound as subscribers decode it (the source has none)."""

MAX_SEQUENCE = 2**31 - 1
"""The highest version a stream can reach (PostgreSQL's ``integer`` sequence column)."""


class UnstorableEventError(InvalidEventError, ValueError):
    """The event cannot be stored everywhere or published (INVALID_ARGUMENT at the edge)."""


def valid_arguments(
    events: Sequence[NewEvent], expected_version: int, guard: StreamVersion | None
) -> None:
    """Refuse (``ValueError``, naming the argument) what no caller's input can make, only a
    writer's mistake: a version past ``MAX_SEQUENCE`` or below ``NO_STREAM`` (but
    ``ANY_VERSION``), or one event id twice in a batch."""
    if expected_version != ANY_VERSION and not NO_STREAM <= expected_version <= MAX_SEQUENCE:
        raise ValueError(
            f"expected_version {expected_version} is out of range: {ANY_VERSION}, or"
            f" {NO_STREAM} to {MAX_SEQUENCE}"
        )
    if guard is not None and guard.version > MAX_SEQUENCE:
        raise ValueError(f"guard.version {guard.version} is out of range: at most {MAX_SEQUENCE}")
    if len({new.event_id for new in events}) != len(events):
        raise ValueError("the same event_id appears twice in one append")


def storable_data(
    stream: str, events: Sequence[NewEvent], guard: StreamVersion | None = None
) -> list[bytes]:
    """Each event's encoded data, after checking that none holds a NUL and that its envelope
    and the guard's stream are stored and read back alike on both backends
    (``_envelope_problems``; its size is checked once sealed, by ``require_publishable``)."""
    if guard is not None and events:
        problems = _text_problems({"guard.stream": guard.stream})
        if problems:
            raise UnstorableEventError(events[0].event.event_type, problems)
    encoded = []
    for new in events:
        problems = _envelope_problems(stream, new)
        data = encode(new.event)
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


def _envelope_problems(stream: str, new: NewEvent) -> list[FieldProblem]:
    """What keeps ``new``'s envelope from being stored, and read back, alike on both backends:
    its texts (``_text_problems``) and its occurred-at, which must be timezone-aware and lie in
    [EARLIEST_MOMENT, LATEST_MOMENT) in UTC. A moment within Python's range but not once in UTC
    (9999-12-31T23:00-05:00) was stored, and every read of it failed for good: the relay and
    every projection stopped at its position."""
    problems = _text_problems(_envelope_texts(stream, new))
    occurred_at = new.metadata.occurred_at
    if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
        problems.append(FieldProblem("metadata.occurred_at", "must be timezone-aware"))
    else:
        try:
            in_utc = occurred_at.astimezone(UTC)
        except OverflowError:  # past datetime's range once in UTC
            in_utc = None
        if in_utc is None or not EARLIEST_MOMENT <= in_utc < LATEST_MOMENT:
            problems.append(FieldProblem("metadata.occurred_at", f"must lie {MOMENT_RANGE} (UTC)"))
    return problems


def _text_problems(texts: dict[str, str]) -> list[FieldProblem]:
    """Each text that breaks the envelope's one rule (``envelope_text_problem``: not empty,
    bounded, no control characters, NUL among them, no lone surrogate: SQLite refused one
    alone, PostgreSQL failed every request committed with it)."""
    problems = []
    for field, text in texts.items():
        problem = envelope_text_problem(text, _TEXT_BOUNDS.get(field))
        if problem is not None:
            problems.append(FieldProblem(field, problem))
    return problems


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
