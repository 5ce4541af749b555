"""``events.validation.reported``: the one reading of pydantic's complaints every service uses."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from events.catalog.base import Identifier, NonEmptyStr
from events.catalog.values import NeedCategory
from events.validation import reported, text_lengths


class _Needs(BaseModel):
    needs: Annotated[tuple[NeedCategory, ...], Field(min_length=1)]


class _Reason(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    code: Annotated[str, Field(min_length=3, max_length=8)] = "abc"


def _details(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as refused:
        _Needs.model_validate(data)
    return [(tuple(d["loc"]), d["msg"]) for d in reported(refused.value)]


def test_a_refused_item_does_not_also_make_the_list_too_short() -> None:
    [(location, message)] = _details({"needs": ["astrology"]})
    assert location == ("needs", 0)
    assert message.startswith("must be 'housing'")
    assert message.endswith("'employment' or 'other'")  # never the erasure marker


def test_a_list_sent_empty_is_still_too_short() -> None:
    [(location, message)] = _details({"needs": []})
    assert location == ("needs",)
    assert "at least 1 item" in message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"reason": None}, "required, 1-1000 characters"),  # proto3's empty text, unset
        ({"reason": ""}, "required, 1-1000 characters"),
        ({}, "required, 1-1000 characters"),
        ({"reason": "r" * 1001}, "at most 1000 characters"),
        ({"reason": 5}, "must be text"),
        ({"reason": "r", "code": "ab"}, "at least 3 characters (at most 8)"),
    ],
)
def test_a_text_field_is_refused_in_plain_words_with_its_bounds(
    data: dict[str, Any], problem: str
) -> None:
    """ "reason: Input should be a valid string" was said of a reason left empty."""
    with pytest.raises(ValidationError) as refused:
        _Reason.model_validate(data)
    [detail] = reported(refused.value, _Reason)
    assert detail["msg"] == problem
    without_model = reported(refused.value)[0]["msg"]
    assert "should" not in without_model
    assert without_model.split(",")[0] == problem.split(",")[0].split(" (")[0]


def test_no_refusal_repeats_pydantics_phrasing() -> None:
    """Every service reads pydantic's details through ``reported``: none says "should"."""
    refused: list[dict[str, Any]] = [{"needs": ["astrology"]}, {"needs": []}, {"needs": None}]
    for data in refused:
        for _, message in _details(data):
            assert "should" not in message, message


def test_a_text_types_bounds_are_read_from_its_annotation() -> None:
    """For refusals of a value checked alone (casetrail_platform.commands.id_problem)."""
    assert text_lengths(Identifier) == (1, 64)
    assert text_lengths(Annotated[str, Field(max_length=9)]) is None  # no least
    assert text_lengths(Annotated[tuple[str, ...], Field(min_length=1, max_length=9)]) is None


def test_an_optional_texts_bounds_are_its_texts() -> None:
    """A text that may be left out (``NonEmptyStr | None``) but is given blank is refused
    "required, 1-500 characters"; its bounds sit inside the union."""
    assert text_lengths(NonEmptyStr | None) == (1, 500)
    assert text_lengths(Annotated[NonEmptyStr | None, Field(description="x")]) == (1, 500)
    assert text_lengths(NonEmptyStr | int | None) is None
    assert text_lengths(tuple[NonEmptyStr, ...] | None) is None
