"""The canonical bytes of a stored event: what a ledger leaf hashes.

Version 1 is a run of 16 netstrings (``<length in decimal>:<bytes>,``), each field's bytes
exactly as stored, in this order: the tag ``casetrail.ledger.v1``, position, event_id, stream,
sequence, event_type, schema_version, source, actor_id, actor_role, correlation_id,
causation_id (empty when none), occurred_at, recorded_at, subject, data. Numbers are decimal;
UUIDs in lower-case hyphenated form; times in microseconds since the Unix epoch (UTC); data is
the event's JSON exactly as stored (ciphertext, once fields are encrypted). Text is UTF-8. Length
prefixes make the encoding unambiguous whatever a field holds, and every value is the one the
store keeps, so the leaf of an event stored under an older schema version hashes those bytes,
not the upcast ones. Both SQL adapters compute the same bytes in SQL (``events/ledger/sqlite.py``,
``events/ledger/postgres.py``); the contract suite checks that they agree with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from events.envelope import to_micros

TAG = b"casetrail.ledger.v1"
_TAG_FIELD = b"%d:%s," % (len(TAG), TAG)


def _text(value: str | UUID | None) -> bytes:
    if value is None:
        return b"0:,"
    encoded = str(value).encode()
    return b"%d:%s," % (len(encoded), encoded)


def _number(value: int | datetime) -> bytes:
    text = b"%d" % (to_micros(value) if isinstance(value, datetime) else value)
    return b"%d:%s," % (len(text), text)


def canonical_row(row: Sequence[Any]) -> bytes:
    """The canonical bytes of a row in ``events.store.rows.COLUMNS`` order (SQLite's text ids
    and integer times, or PostgreSQL's ``UUID`` and ``datetime``)."""
    (
        position,
        event_id,
        stream,
        sequence,
        event_type,
        schema_version,
        data,
        source,
        actor_id,
        actor_role,
        correlation_id,
        causation_id,
        occurred_at,
        recorded_at,
        subject,
    ) = row
    data = bytes(data)
    return b"".join(
        (
            _TAG_FIELD,
            _number(position),
            _text(event_id),
            _text(stream),
            _number(sequence),
            _text(event_type),
            _number(schema_version),
            _text(source),
            _text(actor_id),
            _text(actor_role),
            _text(correlation_id),
            _text(causation_id),
            _number(occurred_at),
            _number(recorded_at),
            _text(subject),
            b"%d:%s," % (len(data), data),
        )
    )


def parse_canonical(leaf: bytes) -> list[bytes]:
    """The 16 fields of canonical bytes (the tag first); ``ValueError`` if malformed."""
    fields: list[bytes] = []
    at = 0
    while at < len(leaf):
        colon = leaf.find(b":", at, at + 21)
        if colon < 0 or not leaf[at:colon].isdigit():
            raise ValueError(f"canonical event bytes: no length at byte {at}")
        length = int(leaf[at:colon])
        end = colon + 1 + length
        if end >= len(leaf) or leaf[end : end + 1] != b",":
            raise ValueError(f"canonical event bytes: field at byte {at} is cut short")
        fields.append(leaf[colon + 1 : end])
        at = end + 1
    if len(fields) != 16 or fields[0] != TAG:
        raise ValueError("canonical event bytes: not 16 fields starting with the v1 tag")
    return fields
