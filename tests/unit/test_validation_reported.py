"""``events.validation.reported``: the one reading of pydantic's complaints every service uses."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from events.catalog.values import NeedCategory
from events.validation import reported


class _Needs(BaseModel):
    needs: Annotated[tuple[NeedCategory, ...], Field(min_length=1)]


def _details(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as refused:
        _Needs.model_validate(data)
    return [(tuple(d["loc"]), d["msg"]) for d in reported(refused.value)]


def test_a_refused_item_does_not_also_make_the_list_too_short() -> None:
    [(location, message)] = _details({"needs": ["astrology"]})
    assert location == ("needs", 0)
    assert message.startswith("Input should be 'housing'")
    assert message.endswith("'employment' or 'other'")  # never the erasure marker


def test_a_list_sent_empty_is_still_too_short() -> None:
    [(location, message)] = _details({"needs": []})
    assert location == ("needs",)
    assert "at least 1 item" in message
