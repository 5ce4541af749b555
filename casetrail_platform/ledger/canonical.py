"""The canonical bytes of a stored event: what a ledger leaf hashes.

Version 1 is a run of 16 netstrings (``<length in decimal>:<bytes>,``), each field's bytes
exactly as stored, in this order: the tag ``casetrail.ledger.v1``, position, event_id, stream,
sequence, event_type, schema_version, source, actor_id, actor_role, correlation_id,
causation_id (empty when none), occurred_at, recorded_at, subject, data. Numbers are decimal;
UUIDs in lower-case hyphenated form; times in microseconds since the Unix epoch (UTC); data is
the event's JSON exactly as stored (ciphertext, once fields are encrypted). Text is UTF-8. Length
prefixes make the encoding unambiguous whatever a field holds, and every value is the one the
store keeps, so the leaf of an event stored under an older schema version hashes those bytes,
not the upcast ones. Both SQL adapters read the stored columns as text and hash them here
(``leaf_hashes``; SQLite writes the netstrings in SQL, ``leaf_hashes_of_text``); the contract
suite checks that they agree with ``canonical_row``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from events.envelope import to_micros

TAG = b"casetrail.ledger.v1"
_TAG_FIELD = b"%d:%s," % (len(TAG), TAG)
_LEAF_PREFIX = b"\x00" + _TAG_FIELD
TextRow = tuple[int, bytes, str, str, str, str, str, str, str, str, str, str, str, str, str, str]
"""A stored event as ``leaf_hashes`` takes it: position, data, then the 14 fields before data
in canonical order as their canonical text (numbers in decimal, times in microseconds, no
causation as ``''``)."""


def _text(value: str | UUID | None) -> bytes:
    if value is None:
        return b"0:,"
    encoded = str(value).encode()
    return b"%d:%s," % (len(encoded), encoded)


def _number(value: int | datetime) -> bytes:
    text = b"%d" % (to_micros(value) if isinstance(value, datetime) else value)
    return b"%d:%s," % (len(text), text)


def canonical_row(row: Sequence[Any]) -> bytes:
    """The canonical bytes of a row in ``casetrail_platform.store.rows.COLUMNS`` order (SQLite's
    text ids and integer times, or PostgreSQL's ``UUID`` and ``datetime``)."""
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


def leaf_hashes(rows: Iterable[TextRow]) -> list[tuple[int, bytes]]:
    """(position, RFC 9162 leaf hash of the canonical bytes) per row: the hot loop of following
    and verifying a store, so one join and one encode per event; a text field outside ASCII
    (its UTF-8 length differs from its length in characters) takes the exact path."""
    sha256 = hashlib.sha256
    prefix = _LEAF_PREFIX
    hashed: list[tuple[int, bytes]] = []
    for position, data, *fields in rows:
        text = "".join([f"{len(field)}:{field}," for field in fields])
        encoded = text.encode()
        if len(encoded) != len(text):
            encoded = b"".join(_text(field) for field in fields)
        hashed.append(
            (position, sha256(b"%s%s%d:%s," % (prefix, encoded, len(data), data)).digest())
        )
    return hashed


def leaf_hashes_of_text(rows: Iterable[tuple[int, str, bytes]]) -> list[tuple[int, bytes]]:
    """``leaf_hashes`` for rows (position, the 14 netstrings before the data as one text,
    data), when the database writes the netstrings itself (SQLite)."""
    sha256 = hashlib.sha256
    prefix = _LEAF_PREFIX
    return [
        (position, sha256(b"%s%s%d:%s," % (prefix, text.encode(), len(data), data)).digest())
        for position, text, data in rows
    ]
