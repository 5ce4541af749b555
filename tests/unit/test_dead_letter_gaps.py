"""A dead letter's reason and the ERROR log quote a validation error by field and problem,
never a value of the event: the catalog's validators report positions, and the dead-letter
text elides whatever still looks like a value (a quoted fragment, a key taken from the input)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from pydantic import ValidationError

from casetrail_platform.bus.deadletter import DeadLetter, failure_text
from casetrail_platform.bus.delivery import Deliverer
from casetrail_platform.bus.message import BusMessage
from casetrail_platform.bus.retry import RetryPolicy
from events.catalog.assignment import CaseAssigned
from events.catalog_registry import build_registry
from events.cloudevents import to_kafka_binary
from events.dead_letters import REASON
from events.errors import FieldProblem, InvalidEventError
from tests.support.fact_history import EXAMPLES as RECORDED

_GROUP = "casetrail.audit.timeline-index-v2"


class _Untouched:
    async def __call__(self, recorded: object) -> None:
        raise AssertionError("an invalid event reached the handler")


async def _dead_letter_of(data: dict[str, object]) -> DeadLetter:
    recorded = next(r for r in RECORDED if r.event_type == "casetrail.case.assigned")
    record = to_kafka_binary(recorded)
    message = BusMessage(
        "casetrail.case-events", 0, 7, record.key, json.dumps(data).encode(), tuple(record.headers)
    )
    letters: list[DeadLetter] = []

    async def keep(letter: DeadLetter) -> bool:
        letters.append(letter)
        return True

    deliverer = Deliverer(_GROUP, _Untouched(), build_registry(), RetryPolicy(), keep)
    await deliverer.deliver([message], asyncio.Event())
    (letter,) = letters
    return letter


def _assigned_data() -> dict[str, object]:
    recorded = next(r for r in RECORDED if r.event_type == "casetrail.case.assigned")
    data: dict[str, object] = json.loads(to_kafka_binary(recorded).value or b"{}")
    return data


async def test_a_repeated_sensitive_value_is_dead_lettered_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = _assigned_data()
    data["matched_needs"] = ["housing", "substance_use", "substance_use"]

    with caplog.at_level(logging.ERROR, logger="casetrail_platform.bus.delivery"):
        letter = await _dead_letter_of(data)

    reason = dict(letter.headers())[REASON].decode()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for said in (reason, logged):
        assert "substance_use" not in said
        assert "SUBSTANCE_USE" not in said
        assert "matched_needs must be unique; entries 1 and 2 repeat" in said


async def test_a_key_from_the_input_is_not_quoted(caplog: pytest.LogCaptureFixture) -> None:
    data = _assigned_data()
    data["heroin relapse"] = "x"  # an unknown key: its name is input too

    with caplog.at_level(logging.ERROR, logger="casetrail_platform.bus.delivery"):
        letter = await _dead_letter_of(data)

    reason = dict(letter.headers())[REASON].decode()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for said in (reason, logged):
        assert "heroin" not in said
        assert "…: not a field of this event" in said


def test_the_catalog_names_positions_of_a_repeat_not_the_value() -> None:
    data = _assigned_data()
    data["matched_needs"] = ["substance_use", "substance_use"]

    with pytest.raises(ValidationError) as refused:
        CaseAssigned.model_validate(data)

    message = refused.value.errors(include_input=False)[0]["msg"]
    assert message == "Value error, matched_needs must be unique; entries 0 and 1 repeat"


def test_quoted_fragments_and_input_keys_are_elided_from_a_validation_error() -> None:
    invalid = InvalidEventError(
        "casetrail.contact.logged",
        [
            FieldProblem("summary", "Value error, 'heroin relapse' is not allowed"),
            FieldProblem("kind", 'Input tag "relapse" is <Need.SUBSTANCE_USE: 1>'),
            FieldProblem("extra.heroin relapse.0", "Extra inputs are not permitted"),
            FieldProblem("ce_storeddata: goals[0].statement", "the client's 'heroin' differs"),
        ],
    )

    text = failure_text(invalid)

    assert "heroin" not in text
    assert "relapse" not in text
    assert "SUBSTANCE" not in text
    assert text == (
        "invalid event 'casetrail.contact.logged': summary: Value error, … is not allowed; "
        "kind: Input tag … is …; extra.….0: Extra inputs are not permitted; "
        "ce_storeddata: goals[0].statement: the client's … differs"
    )
