"""Reading a partition's records that aiokafka cannot parse.

aiokafka parses a fetched batch as it hands its records over; a record it cannot parse (a
header name that is not UTF-8, a batch whose bytes are corrupt) makes ``getmany`` raise, the
records of that poll are lost to the caller, and every later fetch of the partition fails the
same way. ``read_leniently`` fetches one response's worth of a partition itself and reads
every record it can, naming the ones it cannot, so that a member can handle those around them,
dead-letter the rest and seek past them.

aiokafka 0.14 has no public way to fetch raw bytes: the request goes through the consumer's
``_client`` and the batches are read with its pure-Python batch class (both pinned by
``requirements.lock``; ``tests/integration/test_kafka_unparsable_records.py`` holds them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException, NoError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.util import decode_varint

from casetrail_platform.bus.message import BusMessage, as_headers

RECORD_PARSE_ERRORS: tuple[type[Exception], ...] = (UnicodeDecodeError, CorruptRecordException)
"""What ``getmany`` raises for a record it cannot parse."""

_BATCH_HEAD = struct.Struct(">qi")  # base offset, length of the rest
_MAGIC_AT = 16
_READ_UNCOMMITTED = 0


@dataclass(slots=True)
class LenientRead:
    messages: list[BusMessage] = field(default_factory=list)
    """Every record read, in offset order, those that could not be parsed included (with
    what of them could be read)."""
    unreadable: dict[int, str] = field(default_factory=dict)
    """By offset, why a record could not be parsed (no value of it quoted)."""
    next_offset: int | None = None
    """Past the last batch read (``None``: none was)."""


async def read_leniently(
    consumer: Any, tp: TopicPartition, offset: int, max_bytes: int
) -> LenientRead:
    """The records of ``tp`` from ``offset`` that one fetch of at most ``max_bytes`` brings."""
    client = consumer._client
    node = client.cluster.leader_for_partition(tp)
    request = FetchRequest(
        0, 1, max_bytes, _READ_UNCOMMITTED, [(tp.topic, [(tp.partition, offset, max_bytes)])]
    )
    response = await client.send(node, request)
    read = LenientRead()
    for _topic, partitions in response.topics:
        for _partition, error_code, _highwater, *partition_data in partitions:
            error = for_code(error_code)
            if error is not NoError:
                raise error(f"fetching {tp.topic}/{tp.partition}@{offset}")
            _read_batches(tp, offset, bytes(partition_data[-1] or b""), read)
    return read


def _read_batches(tp: TopicPartition, start: int, raw: bytes, read: LenientRead) -> None:
    pos = 0
    while pos + _MAGIC_AT < len(raw):
        base_offset, length = _BATCH_HEAD.unpack_from(raw, pos)
        end = pos + _BATCH_HEAD.size + length
        if end > len(raw):
            break  # the response's last batch, cut at its size bound: fetched again later
        magic = raw[pos + _MAGIC_AT]
        batch_bytes, pos = raw[pos:end], end
        if magic != 2:
            raise CorruptRecordException(f"{tp.topic}/{tp.partition}@{base_offset}: not v2")
        batch = _DefaultRecordBatchPy(bytearray(batch_bytes))
        read.next_offset = batch.next_offset
        if batch.is_control_batch:
            continue
        _read_batch(tp, start, batch, read)


def _read_batch(tp: TopicPartition, start: int, batch: Any, read: LenientRead) -> None:
    offset = batch.base_offset
    try:
        if not batch.validate_crc():
            raise CorruptRecordException("its checksum does not match")
        iter(batch)  # decompressed
        buffer, pos = batch._buffer, batch._pos
        while pos < len(buffer):
            message, why, pos = _read_record(tp, batch, buffer, pos)
            offset = message.offset + 1
            if message.offset >= start:
                read.messages.append(message)
                if why:
                    read.unreadable[message.offset] = why
    except (CorruptRecordException, ValueError, IndexError) as error:
        # Nothing of the rest can be told apart: one letter per offset, naming the batch.
        why = f"record batch at offset {batch.base_offset} cannot be read ({type(error).__name__})"
        for lost in range(max(offset, start), batch.next_offset):
            read.messages.append(BusMessage(tp.topic, tp.partition, lost, None, None, ()))
            read.unreadable[lost] = why


def _read_record(
    tp: TopicPartition, batch: Any, buffer: bytearray, pos: int
) -> tuple[BusMessage, str, int]:
    """The record at ``pos``, why it cannot be handed over (empty if it can), and where the
    next one starts."""
    length, pos = decode_varint(buffer, pos)
    end = pos + length
    _, pos = decode_varint(buffer, pos)  # attributes
    _, pos = decode_varint(buffer, pos)  # timestamp delta
    offset_delta, pos = decode_varint(buffer, pos)
    key, pos = _bytes(buffer, pos)
    value, pos = _bytes(buffer, pos)
    count, pos = decode_varint(buffer, pos)
    headers: list[tuple[str, bytes | None]] = []
    why = ""
    for index in range(count):
        name, pos = _bytes(buffer, pos)
        header_value, pos = _bytes(buffer, pos)
        try:
            text = (name or b"").decode()
        except UnicodeDecodeError:
            text = (name or b"").decode(errors="backslashreplace")
            why = why or f"the name of header {index} is not UTF-8"
        headers.append((text, header_value))
    if pos != end:
        raise CorruptRecordException("a record's length does not match its fields")
    offset = batch.base_offset + offset_delta
    message = BusMessage(tp.topic, tp.partition, offset, key, value, as_headers(headers))
    return message, why, end


def _bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buffer, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buffer):
        raise CorruptRecordException("a field runs past its record")
    return bytes(buffer[pos : pos + length]), pos + length
