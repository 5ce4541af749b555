"""Finding and withholding the sensitive fields of a protobuf answer, by dotted path.

A path walks message fields; a repeated message field applies the rest of the path to each
element (``assessments.factors.psychological``). A withheld field is cleared (a string becomes
empty, a list or message absent) and its path is listed in the answer's ``x-casetrail-redacted``
trailing metadata (``casetrail_platform.policy.guard``): "withheld" is told apart from "never
recorded".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from google.protobuf.message import Message

from events.catalog.access import SensitiveCategory
from events.catalog.scheduling import ServiceKind

_SENSITIVE_VALUES = frozenset(
    {*(category.value for category in SensitiveCategory), ServiceKind.ADDICTION_COUNSELING.value}
)
"""The need categories that are special data, and the service kinds that reveal one (the
catalog's rule: an ``addiction_counseling`` service tells of substance use as plainly as the
need does)."""


def is_sensitive_code(value: str) -> bool:
    """Whether a need category or service kind is special data (withheld, never named in a
    refusal to someone not entitled to it)."""
    return value in _SENSITIVE_VALUES


CATEGORY_FIELDS = frozenset({"category", "need_category", "needs", "matched_needs", "kind"})
"""Text fields by these names hold need categories or service kinds: only some values are
health data (``substance_use`` is, ``housing`` is not), so only those values are withheld."""


def present(message: Message, paths: Iterable[str]) -> list[str]:
    """The paths that hold a value somewhere in ``message`` (in the given order)."""
    return [path for path in paths if _walk(message, path.split("."), clear=False)]


def redact(message: Message, paths: Iterable[str]) -> list[str]:
    """Clear every sensitive value at ``paths`` in ``message``; the paths that held one."""
    return [path for path in paths if _walk(message, path.split("."), clear=True)]


def withhold(message: Message, paths: Iterable[str]) -> None:
    """Clear ``paths`` whatever they hold (a section the reader may not see at all)."""
    for path in paths:
        _walk(message, path.split("."), clear=True, whole=True)


def keep_referred(message: Message, lists: Mapping[str, str], referral_ids: Set[str]) -> None:
    """Keep only the entries of each list (``{path: field naming the referral}``) that belong
    to one of ``referral_ids``; an entry of no referral goes too."""
    for path, id_field in lists.items():
        *parents, name = path.split(".")
        holder = message
        for part in parents:
            holder = getattr(holder, part)
        entries = getattr(holder, name)
        for index in reversed(range(len(entries))):
            if getattr(entries[index], id_field) not in referral_ids:
                del entries[index]


def _walk(message: Message, parts: list[str], *, clear: bool, whole: bool = False) -> bool:
    name, rest = parts[0], parts[1:]
    if name not in message.DESCRIPTOR.fields_by_name:
        raise KeyError(f"{message.DESCRIPTOR.full_name} has no field {name!r}")
    value = getattr(message, name)
    repeated = not isinstance(value, str | bytes | int | float | Message)
    if rest:
        children = list(value) if repeated else ([value] if message.HasField(name) else [])
        found = False
        for child in children:
            found = _walk(child, rest, clear=clear, whole=whole) or found
        return found
    if not whole and name in CATEGORY_FIELDS and _is_text(value, repeated):
        items = [str(item) for item in value] if repeated else [str(value)]
        if not any(item in _SENSITIVE_VALUES for item in items):
            return False
        if clear:
            kept = [item for item in items if item not in _SENSITIVE_VALUES]
            message.ClearField(name)
            if repeated:
                getattr(message, name).extend(kept)
        return True
    if repeated:
        held = len(value) > 0
    elif isinstance(value, Message):
        held = message.HasField(name)
    else:
        held = bool(value)
    if held and clear:
        message.ClearField(name)
    return held


def _is_text(value: object, repeated: bool) -> bool:
    if repeated:
        return all(isinstance(item, str) for item in value)  # type: ignore[attr-defined]
    return isinstance(value, str)
