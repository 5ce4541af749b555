"""The canonical bytes of a stored event: what a ledger leaf hashes.

Version 1 is a run of 16 netstrings (``<length in decimal>:<bytes>,``), each field's bytes
exactly as stored, in this order: the tag ``casetrail.ledger.v1``, position, event_id, stream,
sequence, event_type, schema_version, source, actor_id, actor_role, correlation_id,
causation_id (empty when none), occurred_at, recorded_at, subject, data. Numbers are decimal;
UUIDs in lower-case hyphenated form; times in microseconds since the Unix epoch (UTC); data is
the event's JSON exactly as stored (ciphertext, once fields are encrypted). Text is UTF-8. Length
prefixes make the encoding unambiguous whatever a field holds, and every value is the one the
store keeps, so the leaf of an event stored under an older schema version hashes those bytes,
not the upcast ones. Both SQL adapters write these bytes in SQL from the stored columns (SQLite
hashes them with ``leaf_hashes_of_inputs``, PostgreSQL's server with its ``sha256``); the
contract suite checks that they agree with ``canonical_row``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

TAG = b"casetrail.ledger.v1"
_TAG_FIELD = b"%d:%s," % (len(TAG), TAG)
LEAF_PREFIX = b"\x00" + _TAG_FIELD
"""What every leaf input starts with: RFC 9162's 0x00 and the tag's netstring."""


def _text(value: str | UUID | None) -> bytes:
    if value is None:
        return b"0:,"
    encoded = str(value).encode()
    return b"%d:%s," % (len(encoded), encoded)


def _number(value: int | datetime) -> bytes:
    if isinstance(value, datetime):
        # Imported here: a verify-store worker imports this module for ``LEAF_PREFIX`` alone
        # and starts ~50 ms sooner without the event catalog.
        from events.envelope import to_micros

        value = to_micros(value)
    text = b"%d" % value
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


def leaf_hashes_of_inputs(rows: Iterable[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """(position, RFC 9162 leaf hash) of rows (position, the whole leaf input: ``LEAF_PREFIX``
    and the 15 netstrings) that SQLite wrote: one SHA-256 per row and nothing else in Python,
    the hot loop of following and verifying a store."""
    sha256 = hashlib.sha256
    return [(position, sha256(leaf).digest()) for position, leaf in rows]
