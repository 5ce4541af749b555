"""Reading a message's context attributes, every problem collected (``decoding``)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from events.catalog.base import Role
from events.cloudevents.attributes import (
    MAX_COUNTER,
    ORDER_DIGITS,
    TRACE_PARENT_PATTERN,
    envelope_text_problem,
)
from events.errors import FieldProblem

# Matched whole (fullmatch): ``$`` would let a trailing line feed through, and ``\d`` digits
# of other scripts.
_DIGITS = re.compile(f"[0-9]{{1,{ORDER_DIGITS}}}")
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_HYPHENATED_UUID = re.compile(
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
"""A UUID as the envelope schema's ``uuid`` format takes it (``UUID()`` alone also takes braces,
``urn:uuid:`` and no hyphens)."""
_TRACE_PARENT = re.compile(TRACE_PARENT_PATTERN)


class AttributeReader:
    """Reads context attributes, collecting every problem instead of stopping at the first.

    A required attribute that is missing or malformed yields a placeholder and a problem; the
    caller raises before any placeholder can escape.
    """

    def __init__(
        self,
        values: Mapping[str, Any],
        label: Callable[[str], str],
        missing: str,
        already_reported: Iterable[str] = (),
    ) -> None:
        self._values = values
        self._missing = missing
        self._already_reported = frozenset(already_reported)
        self.label = label
        self.problems: list[FieldProblem] = []

    def problem(self, name: str, problem: str) -> None:
        label = self.label(name)
        if label not in self._already_reported:
            self.problems.append(FieldProblem(label, problem))

    def optional_text(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(name, "must be a non-empty string")
            return None
        return value

    def text(self, name: str) -> str:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
            return ""
        return self.optional_text(name) or ""

    def free_text(self, name: str, max_chars: int | None = None) -> str:
        """A required attribute that is free text (``envelope_text_problem``)."""
        value = self.text(name)
        problem = envelope_text_problem(value, max_chars) if value else None
        if problem is not None:
            self.problem(name, problem)
            return ""
        return value

    def optional_trace_parent(self, name: str) -> str | None:
        value = self.optional_text(name)
        if value is not None and not _TRACE_PARENT.fullmatch(value):
            self.problem(name, "must be a W3C traceparent (version-traceid-parentid-flags)")
            return None
        return value

    def counter(self, name: str, minimum: int) -> int:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
            return minimum
        found = self.optional_counter(name, minimum)
        return minimum if found is None else found

    def optional_counter(self, name: str, minimum: int) -> int | None:
        value = self._values.get(name)
        if value is None:
            return None
        # A JSON number (the JSON format) and digits (a header) are held to the same bounds.
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            number = int(value)
        if number is not None and minimum <= number <= MAX_COUNTER:
            return number
        self.problem(
            name,
            f"must be a whole number >= {minimum} and at most {MAX_COUNTER} "
            f"(up to {ORDER_DIGITS} digits)",
        )
        return None

    def optional_binary(self, name: str) -> bytes | None:
        value = self.optional_text(name)
        if value is None:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self.problem(name, "must be base64")
            return None

    def optional_uuid(self, name: str) -> UUID | None:
        value = self.optional_text(name)
        if value is None:
            return None
        if not _HYPHENATED_UUID.fullmatch(value):
            self.problem(name, "must be a UUID (8-4-4-4-12 hexadecimal digits)")
            return None
        return UUID(value)

    def uuid(self, name: str) -> UUID:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
        return self.optional_uuid(name) or UUID(int=0)

    def optional_timestamp(self, name: str) -> datetime | None:
        value = self.optional_text(name)
        if value is None:
            return None
        parsed = _parse_time(value)
        if parsed is None:
            self.problem(name, "must be an RFC 3339 timestamp with an offset")
        return parsed

    def timestamp(self, name: str) -> datetime:
        if self._values.get(name) is None:
            self.problem(name, self._missing)
        return self.optional_timestamp(name) or datetime.min.replace(tzinfo=UTC)

    def role(self, name: str) -> Role:
        value = self.text(name)
        try:
            return Role(value)
        except ValueError:
            if value:
                self.problem(name, f"unknown role {value!r}")
            return Role.SYSTEM


def _parse_time(text: str) -> datetime | None:
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    day, clock, fraction, offset = match.groups()
    # datetime keeps microseconds; finer digits from other producers are truncated.
    micro = f".{fraction[:6]:0<6}" if fraction else ""
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{day}T{clock}{micro}{offset}")
    except ValueError:
        return None
