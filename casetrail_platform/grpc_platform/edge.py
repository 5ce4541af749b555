"""The checks every request passes before a handler sees it: the bounds of
``casetrail_platform.limits``.

One walk over the request message, whatever the service: each string is bounded and free of
control characters (C0, DEL and C1; free text may hold tab, line feed and carriage return; ids
and keys nothing), each repeated field is bounded, each timestamp lies in the plausible range,
each day (the fields of ``DATED_FIELDS``) is written YYYY-MM-DD and lies in that range too, and
each duration lies within protobuf's own bound. Problems name the request field as the
services do (``goals[0].tasks[1].description``) and never echo the value. Services then
check their own, narrower rules.
"""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from typing import Any, NamedTuple

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from casetrail_platform.limits import (
    EARLIEST_MOMENT,
    LATEST_MOMENT,
    MAX_ID_CHARS,
    MAX_KEY_CHARS,
    MAX_LIST_ITEMS,
    MAX_TEXT_CHARS,
    MAX_TOKEN_CHARS,
    MOMENT_RANGE,
    id_like,
    within_moment_bounds,
)
from events.errors import FieldProblem

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_DURATION_SECONDS = 315_576_000_000
"""The protobuf spec's bound (about 10,000 years): Python's parser does not enforce it, and
past it a duration overflows ``timedelta`` in the handler (INTERNAL instead of a refusal)."""
_EARLIEST_SECONDS = int(EARLIEST_MOMENT.timestamp())
_LATEST_SECONDS = int(LATEST_MOMENT.timestamp())

_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_IN_ID = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Unicode's control characters (category Cc: C0, DEL and C1), which show nothing: a C1 one
(U+0080-U+009F, pasted from text decoded as Latin-1) in a name or identifier hid a duplicate
client. Free text keeps tab, line feed and carriage return."""
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""Exactly YYYY-MM-DD in ASCII digits: ``date.fromisoformat`` and pydantic also take other
spellings (``20200101``, ``2020-01-01T00:00:00``, ``0``), which would slip past the range."""

DATED_FIELDS = frozenset(
    {
        "date_of_birth",
        "expected_start_date",
        "next_follow_up_due",
        "overdue_before",
        "target_date",
        "until",
        "valid_until",
    }
)
"""The string fields of requests that hold a day, by name (a name means the same in every
request). Named, not guessed from a suffix: ``until`` has none. A test walks the generated
descriptors so that a new field named like a date cannot be left out."""


def request_problems(message: Message) -> list[FieldProblem]:
    """Every problem of ``message`` with the bounds every request keeps (empty if none)."""
    problems: list[FieldProblem] = []
    _check_message(message, "", problems)
    return problems


_ID, _TEXT, _MOMENT, _MESSAGE, _BYTES, _SPAN = range(6)


class _Plan(NamedTuple):
    """How one field is checked, worked out once per message type: reading fields by name is
    several times faster than ``ListFields`` (which builds descriptor objects every call)."""

    kind: int
    name: str
    repeated: bool
    longest: int
    dated: bool


_PLANS: dict[str, tuple[_Plan, ...]] = {}


def _plans(descriptor: Any) -> tuple[_Plan, ...]:
    # Any: the C (upb) and Python descriptor classes are both seen here.
    found = _PLANS.get(descriptor.full_name)
    if found is None:
        found = _PLANS[descriptor.full_name] = tuple(
            plan for field in descriptor.fields if (plan := _plan(field)) is not None
        )
    return found


def _plan(field: FieldDescriptor) -> _Plan | None:
    name = field.name
    longest = 0
    if field.type == FieldDescriptor.TYPE_STRING:
        longest = _id_length(name)
        kind = _ID if longest else _TEXT
        longest = longest or MAX_TEXT_CHARS
    elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        kind = {_TIMESTAMP: _MOMENT, _DURATION: _SPAN}.get(field.message_type.full_name, _MESSAGE)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        kind, longest = _BYTES, MAX_TEXT_CHARS
    elif field.is_repeated:
        kind = _BYTES  # only its number of items is checked
    else:
        return None
    return _Plan(kind, name, field.is_repeated, longest, name in DATED_FIELDS)


def _check_message(message: Message, prefix: str, problems: list[FieldProblem]) -> None:
    # Paths are only spelt out for problems and nested messages: most fields have none.
    for plan in _plans(message.DESCRIPTOR):
        name = plan.name
        if plan.repeated:
            values = getattr(message, name)
            if not values:
                continue
            if len(values) > MAX_LIST_ITEMS:
                problems.append(
                    FieldProblem(_path(prefix, name), f"at most {MAX_LIST_ITEMS} items")
                )
            elif plan.kind != _BYTES or plan.longest:
                for index, item in enumerate(values):
                    _check_value(plan, item, prefix, f"{name}[{index}]", problems)
        elif plan.kind in (_MESSAGE, _MOMENT, _SPAN):
            if message.HasField(name):
                _check_value(plan, getattr(message, name), prefix, name, problems)
        else:
            value = getattr(message, name)
            if value:
                _check_value(plan, value, prefix, name, problems)


def _path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_value(
    plan: _Plan, value: Any, prefix: str, name: str, problems: list[FieldProblem]
) -> None:
    kind = plan.kind
    if kind in (_ID, _TEXT):
        problem = _text_problem(plan, value)
        if problem:
            problems.append(FieldProblem(_path(prefix, name), problem))
    elif kind == _MESSAGE:
        _check_message(value, _path(prefix, name), problems)
    elif kind == _MOMENT:
        seconds, nanos = value.seconds, value.nanos
        if not (_EARLIEST_SECONDS <= seconds < _LATEST_SECONDS and 0 <= nanos < 1_000_000_000):
            problems.append(
                FieldProblem(_path(prefix, name), f"must be a moment {MOMENT_RANGE} (UTC)")
            )
    elif kind == _SPAN:
        seconds, nanos = value.seconds, value.nanos
        if not (
            -_DURATION_SECONDS <= seconds <= _DURATION_SECONDS
            and -1_000_000_000 < nanos < 1_000_000_000
            and (seconds == 0 or nanos == 0 or (seconds > 0) == (nanos > 0))
        ):
            problems.append(
                FieldProblem(_path(prefix, name), "must be a duration within ±10,000 years")
            )
    elif len(value) > plan.longest:
        problems.append(FieldProblem(_path(prefix, name), f"at most {plan.longest} bytes"))


def _text_problem(plan: _Plan, value: str) -> str | None:
    if len(value) > plan.longest:
        return f"at most {plan.longest} characters"
    if plan.kind == _ID:
        if _CONTROL_IN_ID.search(value):
            return "must not contain control characters (such as NUL)"
        return None
    if _CONTROL_IN_TEXT.search(value):
        return "must not contain control characters other than tab, line feed, carriage return"
    if plan.dated and not _plausible_day(value):
        return f"must be a date written YYYY-MM-DD {MOMENT_RANGE}"
    return None


def _plausible_day(value: str) -> bool:
    if not _ISO_DAY.fullmatch(value):
        return False
    try:
        day = date.fromisoformat(value)
    except ValueError:  # 2026-02-30
        return False
    return within_moment_bounds(day)


@cache
def _id_length(name: str) -> int:
    """The longest an id-like field may be; 0 for other fields."""
    if name.endswith("_key"):
        return MAX_KEY_CHARS
    if name.endswith("_token"):
        return MAX_TOKEN_CHARS
    return MAX_ID_CHARS if id_like(name) else 0
