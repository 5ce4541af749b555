"""Finding the string field of a request that is not valid UTF-8, from the raw bytes.

protobuf refuses such a request whole ("String field had bad UTF-8") without saying where; this
walks the wire format along the request's descriptor to name the field for the refusal.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class _Malformed(Exception):
    """The bytes are not protobuf wire format (nothing more precise to say)."""


def invalid_utf8_field(descriptor: Descriptor, data: bytes) -> str | None:
    """The path of the first string field holding invalid UTF-8 (``goals[1].statement``), or
    ``None`` when none is found or the bytes are not wire format."""
    try:
        return _walk(descriptor, memoryview(data), "")
    except _Malformed:
        return None


def _walk(descriptor: Descriptor, data: memoryview, prefix: str) -> str | None:
    seen: dict[int, int] = {}
    offset = 0
    while offset < len(data):
        tag, offset = _varint(data, offset)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _VARINT:
            _, offset = _varint(data, offset)
            continue
        if wire_type in (_FIXED64, _FIXED32):
            offset += 8 if wire_type == _FIXED64 else 4
            continue
        if wire_type != _LENGTH_DELIMITED:
            raise _Malformed
        length, offset = _varint(data, offset)
        if offset + length > len(data):
            raise _Malformed
        payload = data[offset : offset + length]
        offset += length
        field = descriptor.fields_by_number.get(number)
        if field is None:
            continue
        index = seen.get(number, 0)
        seen[number] = index + 1
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.is_repeated:
            path += f"[{index}]"
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                str(payload, "utf-8")
            except UnicodeDecodeError:
                return path
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            found = _walk(field.message_type, payload, path)
            if found is not None:
                return found
    return None


def _varint(data: memoryview, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise _Malformed
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
