"""Finding and withholding the sensitive fields of a protobuf answer, by dotted path.

A path walks message fields; a repeated message field applies the rest of the path to each
element (``assessments.factors.psychological``). A withheld field is cleared (a string becomes
empty, a list or message absent) and its path is listed in the answer's ``x-casetrail-redacted``
trailing metadata (``casetrail_platform.policy.guard``): "withheld" is told apart from "never
recorded".

Need categories and service kinds are special data by value, not by field: ``housing`` is not,
``substance_use`` is, and ``addiction_counseling`` is the only kind that is. So withholding one
must not show where it was: an entry of a list whose category or kind is special data goes
whole (a blank kind could only be ``addiction_counseling``), a list of categories loses those
values, and such a path is listed as withheld whatever it held (listed only when something was
taken, it would tell that the case has special data). Nor may a field naming such an entry
show it: a service booked from a referral of a special-data need keeps its kind (``counseling``
is none) but loses the referral's id, which, listed nowhere else in the answer, could only be
such a referral's (``special_ids``, ``unlink``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from typing import Any

from google.protobuf.message import Message

from events.catalog.access import SensitiveCategory
from events.catalog.scheduling import ServiceKind
from events.sealed_values import ERASED_CODE

_CATEGORY_REVEALED: Mapping[str, SensitiveCategory] = {
    **{category.value: category for category in SensitiveCategory},
    ServiceKind.ADDICTION_COUNSELING.value: SensitiveCategory.SUBSTANCE_USE,
}
"""The need categories that are special data, and the service kinds that reveal one (the
catalog's rule: an ``addiction_counseling`` service tells of substance use as plainly as the
need does), each with the sensitive category it tells of."""

_SENSITIVE_VALUES = frozenset({*_CATEGORY_REVEALED, ERASED_CODE})
"""Those, and the marker an erased client's codes read as (``ERASED_CODE``): it may stand for
special data, so withheld as such; shown, an entry withheld before the erasure appeared (a
substance-use goal beside the goals a coordinator was shown, its plan's agreement with it)."""


def is_sensitive_code(value: str) -> bool:
    """Whether a need category or service kind is special data (withheld, never named in a
    refusal to someone not entitled to it)."""
    return value in _SENSITIVE_VALUES


def category_revealed(value: str) -> SensitiveCategory | None:
    """The sensitive category a need category or service kind tells of (``None``: none):
    disclosing it needs a consent naming that category, as the need itself does."""
    return _CATEGORY_REVEALED.get(value)


CATEGORY_FIELDS = frozenset({"category", "need_category", "needs", "matched_needs", "kind"})
"""Text fields by these names hold need categories or service kinds: only some values are
health data (``substance_use`` is, ``housing`` is not), so only those values are withheld."""


def present(message: Message, paths: Iterable[str]) -> list[str]:
    """The paths that hold a value somewhere in ``message`` (in the given order)."""
    return [path for path in paths if _walk(message, path.split("."), clear=False)]


def redact(message: Message, paths: Iterable[str]) -> list[str]:
    """Clear every sensitive value at ``paths`` in ``message``; the paths withheld: those that
    held one, and every path of need categories or service kinds (see the module's note)."""
    return [
        path for path in paths if _walk(message, path.split("."), clear=True) or _names_codes(path)
    ]


def withhold(message: Message, paths: Iterable[str]) -> None:
    """Clear ``paths`` whatever they hold (a section the reader may not see at all)."""
    for path in paths:
        _walk(message, path.split("."), clear=True, whole=True)


def keep_referred(message: Message, lists: Mapping[str, str], referral_ids: Set[str]) -> None:
    """Keep only the entries of each list (``{path: field naming the referral}``) that belong
    to one of ``referral_ids``; an entry of no referral goes too."""
    for path, id_field in lists.items():
        _drop_entries(message, f"{path}.{id_field}", lambda named: named not in referral_ids)


def special_ids(message: Message, entries: str, id_path: str) -> frozenset[str]:
    """The id of each entry of a list of ``message`` that ``redact`` withholds whole, the list
    at the top or within messages or other lists, as ``redact`` walks to it: ``entries`` is the
    path of the entries' category or kind, the list of entries the first list along it whose
    entries hold that one value through single messages (``referrals.need_category``: each of
    ``referrals`` whose ``need_category`` is special data; ``plan.goals.goal.need_category``:
    each of the plan's ``goals`` whose goal's ``need_category`` is; ``previous_plans.goals.
    goal.need_category``: those of every earlier plan), and ``id_path`` the path of an entry's
    id within it (``referral_id``, ``goal.goal_id``). Taken before ``redact``, whose answer no
    longer lists them."""
    found: set[str] = set()
    _collect_special(message, entries.split("."), id_path.split("."), found)
    return frozenset(found)


def unlist(message: Message, lists: Mapping[str, Set[str]]) -> list[str]:
    """``unlink`` for lists of ids (``plan.agreed_goal_ids``): each of its ids, entries withheld
    whole (``special_ids``), is deleted from the list at its path, the others kept. The
    paths withheld: every one, whatever it held, as ``unlink``'s."""
    for path, ids in lists.items():
        _unlist(message, path.split("."), ids)
    return list(lists)


def unlink(message: Message, links: Mapping[str, Set[str]]) -> list[str]:
    """Clear each field at a path of ``links`` (``services.referral_id``) that names one of its
    ids, entries withheld whole (``special_ids``): the entry is gone, and an id the answer
    lists nowhere else could only be one of a special-data need or kind. The paths withheld:
    every one, whatever it held, as those of categories and kinds (listed only when an id was
    cleared, they would tell that the case has special data)."""
    for path, ids in links.items():
        _unlink(message, path.split("."), ids)
    return list(links)


def drop_referrers(message: Message, referrers: Mapping[str, Set[str]]) -> list[str]:
    """Withhold whole each entry of a list of ``message`` whose field at a path of
    ``referrers`` (``claims.service_ids``: each of ``claims`` by its ``service_ids``) names one
    of its ids, entries withheld whole (``special_ids``): a claim or a reservation for an
    addiction-counseling service tells of it, though none of its own fields is special data,
    and cleared of the id it would still say that it was for something withheld. The paths
    withheld: every one, whatever it held, as ``unlink``'s."""
    for path, ids in referrers.items():
        _drop_entries(message, path, _names_any_of(ids))
    return list(referrers)


def _names_any_of(ids: Set[str]) -> Callable[[Any], bool]:
    def names(named: Any) -> bool:  # one id, or a repeated field of them
        return not ids.isdisjoint([named] if isinstance(named, str) else named)

    return names


def _drop_entries(message: Message, path: str, drops: Callable[[Any], bool]) -> None:
    """Delete each entry of the list at ``path`` minus its last part (``claims`` of
    ``claims.service_ids``) whose field named by that last part ``drops``."""
    *parents, name, id_field = path.split(".")
    holder = message
    for part in parents:
        holder = getattr(holder, part)
    entries = getattr(holder, name)
    for index in reversed(range(len(entries))):
        if drops(getattr(entries[index], id_field)):
            del entries[index]


def _unlink(message: Message, parts: list[str], ids: Set[str]) -> None:
    def clear(holder: Message, name: str) -> None:
        if getattr(holder, name) in ids:
            holder.ClearField(name)

    _at_each(message, parts, clear)


def _at_each(message: Message, parts: list[str], act: Callable[[Message, str], None]) -> None:
    """``act`` on each message holding the field at the end of ``parts`` (with that field's
    name), through every entry of a list and every sub-message set on the way."""
    name, rest = parts[0], parts[1:]
    if not rest:
        act(message, name)
        return
    value = getattr(message, name)
    repeated = not isinstance(value, Message)
    children = list(value) if repeated else ([value] if message.HasField(name) else [])
    for child in children:
        _at_each(child, rest, act)


def _collect_special(
    message: Message, parts: list[str], id_parts: list[str], found: set[str]
) -> None:
    name, rest = parts[0], parts[1:]
    if not rest:
        return
    value = getattr(message, name)
    if isinstance(value, Message):
        if message.HasField(name):
            _collect_special(value, rest, id_parts, found)
        return
    for entry in value:
        if _special_code_at(entry, rest):
            found.add(_text_at(entry, id_parts))
        else:
            _collect_special(entry, rest, id_parts, found)


def _text_at(message: Message, parts: list[str]) -> str:
    value: Any = message
    for part in parts:
        value = getattr(value, part)
    return str(value)


def _unlist(message: Message, parts: list[str], ids: Set[str]) -> None:
    def keep_others(holder: Message, name: str) -> None:
        listed = getattr(holder, name)
        kept = [item for item in listed if item not in ids]
        del listed[:]
        listed.extend(kept)

    _at_each(message, parts, keep_others)


def _walk(message: Message, parts: list[str], *, clear: bool, whole: bool = False) -> bool:
    name, rest = parts[0], parts[1:]
    if name not in message.DESCRIPTOR.fields_by_name:
        raise KeyError(f"{message.DESCRIPTOR.full_name} has no field {name!r}")
    value = getattr(message, name)
    repeated = not isinstance(value, str | bytes | int | float | Message)
    if rest:
        if repeated and clear and not whole:
            # Backwards: deleting an entry leaves the indexes still to come in place.
            found = False
            for index in reversed(range(len(value))):
                if _special_code_at(value[index], rest):
                    del value[index]
                    found = True
                else:
                    found = _walk(value[index], rest, clear=True) or found
            return found
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


def _names_codes(path: str) -> bool:
    return path.rsplit(".", 1)[-1] in CATEGORY_FIELDS


def _special_code_at(message: Message, parts: list[str]) -> bool:
    """Whether ``parts`` leads, through single messages, to one need category or service kind
    (not a list of them) holding special data: the entry ``message`` is then about it."""
    *through, name = parts
    if name not in CATEGORY_FIELDS:
        return False
    for part in through:
        child = getattr(message, part)
        if not isinstance(child, Message) or not message.HasField(part):
            return False
        message = child
    value = getattr(message, name)
    return isinstance(value, str) and value in _SENSITIVE_VALUES


def _is_text(value: object, repeated: bool) -> bool:
    if repeated:
        return all(isinstance(item, str) for item in value)  # type: ignore[attr-defined]
    return isinstance(value, str)
