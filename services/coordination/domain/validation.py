"""Building validated models from untrusted data, with refusals that name the request field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from casetrail_platform.commands import InvalidCommand
from events.errors import FieldProblem
from events.validation import reported

M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Mapping[str, Any], prefix: str = "") -> M:
    """``model`` built from ``data``, or ``InvalidCommand`` listing every bad field.

    Field names in the refusal are the dotted paths of ``data`` (the request's own field names,
    since commands and events use the same names as the API), prefixed with ``prefix``.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as error:
        raise InvalidCommand(problems_of(error, prefix, model)) from None


def problems_of(
    error: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> list[FieldProblem]:
    problems = []
    for detail in reported(error, model):
        path = ".".join(str(part) for part in detail["loc"])
        field = ".".join(part for part in (prefix, path) if part) or prefix or "request"
        problems.append(FieldProblem(field, detail["msg"]))
    return problems
