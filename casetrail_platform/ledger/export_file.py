"""Reading an export file: numbered lines of bounded length (``export_check`` reads each with
``events.strict_json``, as the bus reads a record)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from typing import BinaryIO

from casetrail_platform.limits import MAX_EVENT_BYTES

MAX_LINE_BYTES = 4 * MAX_EVENT_BYTES
"""The longest export line ``export_lines`` hands over: an event is at most ``MAX_EVENT_BYTES``
as stored; its line may carry it twice (``storeddata`` beside the upcast ``data``) with its
proof and checkpoint. A longer line is no export's, and is not read into memory whole."""


@dataclass(frozen=True)
class Unreadable:
    """A line of an export file that is no text to decode: why."""

    problem: str


def export_lines(file: BinaryIO) -> Iterator[tuple[int, str | Unreadable]]:
    """The lines of an export file with their numbers (from 1), read one at a time, cut at line
    feeds only as ``events.cloudevents.json_lines`` does: memory stays bounded by
    ``MAX_LINE_BYTES`` whatever the file holds, and a line too long or not UTF-8 is named
    instead of failing the whole file."""
    for number in count(1):
        line = file.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = file.readline(MAX_LINE_BYTES)
            yield number, Unreadable(f"longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, Unreadable(f"not UTF-8 (byte {error.start + 1} of the line)")
            continue
        yield number, text.removesuffix("\n").removesuffix("\r")
