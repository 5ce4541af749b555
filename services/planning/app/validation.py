"""Checking request values against the catalog's own field definitions, naming request fields.

A request is checked as a whole: every problem is collected and reported at once, each with the
path of the request field it concerns (``goals[0].tasks[1].target_date``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from casetrail_platform.commands import InvalidCommand
from events.catalog_registry import model_named
from events.errors import FieldProblem
from events.validation import reported

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_CONFIG = ConfigDict(str_strip_whitespace=True)


def field_path(prefix: str, location: Sequence[int | str]) -> str:
    path = prefix
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


def problems_of(
    error: ValidationError,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    within: tuple[int | str, ...] = (),
) -> list[FieldProblem]:
    """``error``'s problems, named from ``prefix``; with ``model`` (the one validated, or the
    one whose field ``within`` was) an empty text says its bounds: "required, 1-N characters"."""
    return [
        FieldProblem(field_path(prefix, detail["loc"]) or prefix, detail["msg"])
        for detail in reported(error, model, within)
    ]


def invalid_command(error: ValidationError, prefix: str = "") -> InvalidCommand:
    # A whole event's refusal (rules spanning its fields): its model is the catalog's.
    return InvalidCommand(problems_of(error, prefix, model_named(error.title)))


@cache
def _adapter(model: type[BaseModel], field: str) -> TypeAdapter[Any]:
    info = model.model_fields[field]
    return TypeAdapter(cast(Any, Annotated[info.annotation, info]), config=_CONFIG)


_TYPE_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _type_adapter(kind: type[Any]) -> TypeAdapter[Any]:
    adapter = _TYPE_ADAPTERS.get(kind)
    if adapter is None:
        adapter = _TYPE_ADAPTERS[kind] = TypeAdapter(kind, config=_CONFIG)
    return adapter


class Violations:
    """Collects field problems while a command is built; ``raise_if_any`` reports them all."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def add(self, path: str, problem: str) -> None:
        self.problems.append(FieldProblem(path, problem))

    def field(self, model: type[BaseModel], field: str, value: object, path: str = "") -> Any:
        """``value`` checked as ``model.field`` is; ``None`` (and a problem) when it is not."""
        try:
            return _adapter(model, field).validate_python(value)
        except ValidationError as error:
            self.problems.extend(problems_of(error, path or field, model, (field,)))
            return None

    def value(self, kind: type[T], value: object, path: str) -> T | None:
        """``value`` as a ``kind`` (a date, an enum member, ...), or ``None`` and a problem."""
        try:
            return cast(T, _type_adapter(kind).validate_python(value))
        except ValidationError as error:
            self.problems.extend(problems_of(error, path))
            return None

    def build(self, model: type[M], path: str, **data: object) -> M | None:
        try:
            return model(**data)
        except ValidationError as error:
            self.problems.extend(problems_of(error, path, model))
            return None

    def raise_if_any(self) -> None:
        if self.problems:
            raise InvalidCommand(self.problems)
