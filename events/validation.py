"""pydantic's complaints about a command's data, as a caller should read them.

Every service turns a catalog model's ``ValidationError`` into field violations; they all read
the details through ``reported`` first, so the same request gets the same violations anywhere,
in words a person understands ("required, 1-1000 characters") rather than pydantic's ("Input
should be a valid string", said of a text left empty, which proto3 cannot tell from unset).
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from events.catalog.values import ERASURE_MARKERS
from events.errors import FieldProblem

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def reported(
    error: ValidationError,
    model: type[BaseModel] | None = None,
    within: tuple[int | str, ...] = (),
) -> list[ErrorDetails]:
    """``error``'s details without the noise: a list's ``too_short`` when items of that list
    were refused (pydantic counts only the valid items, so one bad item of one also reads "at
    least 1 item ... not 0"), and the erasure markers left out of the values a code may take
    (the enum lists them, the store refuses them: ``casetrail_platform.keys.fields``); each
    message in plain words (``plain``). ``model``: the model validated, whose text fields'
    bounds are then named with "required"; ``within``: where in ``model`` the value validated
    sits, when it was one field of it checked alone (its details' locations start there)."""
    details = error.errors(include_url=False)
    refused_items = {detail["loc"] for detail in details if len(detail["loc"]) > 1}
    kept: list[ErrorDetails] = []
    for detail in details:
        location = detail["loc"]
        if detail["type"] == "too_short" and any(
            item[: len(location)] == location and len(item) > len(location)
            for item in refused_items
        ):
            continue
        if detail["type"] in ("enum", "literal_error"):
            detail = _without_markers(detail)
        kept.append({**detail, "msg": plain(detail, _lengths(model, within + location))})
    return kept


def event_problems(
    error: ValidationError, model: type[BaseModel], version_note: str = ""
) -> list[FieldProblem]:
    """``error`` (validating data into the catalog's ``model``) as an ``InvalidEventError``'s
    problems, read through ``reported`` as the services' refusals are: each field named with
    its problem in plain words, never the value refused; ``version_note`` ends each problem
    (which schema version the data was read as)."""
    return [
        FieldProblem(
            ".".join(str(part) for part in detail["loc"]) or "data",
            # Data read or received, not a caller's request (as ``plain`` says it).
            ("not a field of this event" if detail["type"] == "extra_forbidden" else detail["msg"])
            + version_note,
        )
        for detail in reported(error, model)
    ]


_REQUIRED_TYPES = frozenset({"missing", "none_required"})
_REWORDED = (
    ("Input should be a valid string", "must be text"),
    ("Input should have timezone info", "must have a UTC offset"),
    ("Input should be ", "must be "),
    ("String should ", "must "),
    ("List should ", "must "),
    ("Tuple should ", "must "),
    ("Dictionary should ", "must "),
    ("Value should ", "must "),
    ("Input tag ", "tag "),
    ("Value error, ", ""),
    ("Assertion failed, ", ""),
    ("Extra inputs are not permitted", "not a field of this request"),
)
"""pydantic's phrasings, as the refusals say them (the rest of each message is kept)."""


def plain(detail: ErrorDetails, lengths: tuple[int, int] | None = None) -> str:
    """``detail``'s message in plain words: a text or value left empty or unset is "required"
    (with its bounds, ``lengths``, when known: "required, 1-1000 characters"), never "Input
    should be a valid string"; pydantic's other phrasings reworded (``_REWORDED``)."""
    kind = detail["type"]
    context = detail.get("ctx") or {}
    unset = detail.get("input", "") is None and kind.endswith("_type")
    if (
        kind in _REQUIRED_TYPES
        or unset
        or (kind == "string_too_short" and context.get("min_length") == 1)
    ):
        return "required" + (f", {lengths[0]}-{lengths[1]} characters" if lengths else "")
    if kind == "string_too_short":
        most = f" (at most {lengths[1]})" if lengths else ""
        return f"at least {context['min_length']} characters{most}"
    if kind == "string_too_long":
        return f"at most {context['max_length']} characters"
    message = str(detail["msg"])
    for theirs, ours in _REWORDED:
        if message.startswith(theirs):
            return ours + message[len(theirs) :]
    return message


def _lengths(
    model: type[BaseModel] | None, location: tuple[int | str, ...]
) -> tuple[int, int] | None:
    """The (least, most) characters of the text field at ``location`` of ``model`` (through
    nested models), or ``None`` when it is not one with both bounds."""
    current: Any = model
    info = None
    for part in location:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        if isinstance(part, int) or part not in current.model_fields:
            return None
        info = current.model_fields[part]
        current = info.annotation
    if info is None:
        return None
    return _text_lengths(info)


def text_lengths(annotation: Any) -> tuple[int, int] | None:
    """The (least, most) characters of a text type such as the catalog's ``Identifier``
    (``Annotated[str, Field(...)]``), for ``plain``; ``None`` when it is not one with both."""
    return _text_lengths(FieldInfo.from_annotation(annotation))


def _text_lengths(info: FieldInfo) -> tuple[int, int] | None:
    # Field(min_length=..., max_length=...) lands in the metadata as annotated_types' MinLen
    # and MaxLen (a text field's or a list's: only a text's are said in characters).
    least = next((m.min_length for m in info.metadata if hasattr(m, "min_length")), None)
    most = next((m.max_length for m in info.metadata if hasattr(m, "max_length")), None)
    if info.annotation is str and least is not None and most is not None:
        return int(least), int(most)
    # An optional text (``NonEmptyStr | None``): its bounds sit on the text inside the union,
    # and a text given but blank is refused by them ("required, 1-500 characters").
    if get_origin(info.annotation) in (Union, UnionType):
        texts = [arg for arg in get_args(info.annotation) if arg is not type(None)]
        if len(texts) == 1 and len(get_args(info.annotation)) == 2:
            return text_lengths(texts[0])
    return None


def _without_markers(detail: ErrorDetails) -> ErrorDetails:
    expected = str((detail.get("ctx") or {}).get("expected", ""))
    allowed = [value for value in _QUOTED.findall(expected) if value not in ERASURE_MARKERS]
    if not allowed:
        return detail
    quoted = [f"'{value}'" for value in allowed]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return {**detail, "msg": f"Input should be {listed}"}
