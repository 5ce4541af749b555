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
from events.cloudevents.attributes import ORDER_DIGITS
from events.errors import FieldProblem

_DIGITS = re.compile(r"^[0-9]{1,19}$")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


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
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        if isinstance(value, str) and _DIGITS.match(value) and int(value) >= minimum:
            return int(value)
        self.problem(name, f"must be a whole number >= {minimum} (up to {ORDER_DIGITS} digits)")
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
        try:
            return UUID(value)
        except ValueError:
            self.problem(name, "must be a UUID")
            return None

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
    match = _RFC3339.match(text)
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
