"""Catalog models validate the command's data; their complaints become field violations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from casetrail_platform.commands import InvalidCommand
from events.errors import FieldProblem
from events.validation import reported

Model = TypeVar("Model", bound=BaseModel)


def build(model: type[Model], data: Mapping[str, Any]) -> Model:
    """``model`` from ``data``, or ``InvalidCommand`` naming each bad field as the request does."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as error:
        raise InvalidCommand(
            [
                FieldProblem(field_path(detail["loc"]), detail["msg"])
                for detail in reported(error, model)
            ]
        ) from None


def fields_of(command: Any, *leave_out: str) -> dict[str, Any]:
    """A command dataclass as the nested dict a catalog model validates."""
    data: dict[str, Any] = asdict(command)
    for name in leave_out:
        data.pop(name, None)
    return data


def field_path(location: tuple[int | str, ...]) -> str:
    """``("identifiers", 0, "scheme")`` -> ``identifiers[0].scheme``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "request"
