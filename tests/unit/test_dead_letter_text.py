"""What a dead letter and the log say about the error that failed an event: a topic of dead
letters is kept forever, so a message that may quote the event's values is withheld."""

from __future__ import annotations

import pytest

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.commands import RuleBroken
from events.dead_letters import REASON
from events.envelope import RecordedEvent
from events.errors import FieldProblem, InvalidEventError, UnreadableStoredEventError
from tests.contract.bus_conftest import eventually, recorded, running
from tests.support.sample_events import sample_registry

SECRET = "diagnosed with PTSD after the assault"


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


@pytest.mark.parametrize(
    "error",
    [ValueError(f"cannot apply {SECRET!r}"), KeyError(SECRET), RuntimeError(SECRET)],
)
def test_a_foreign_error_is_named_with_its_place_and_its_message_withheld(
    error: Exception,
) -> None:
    text = failure_text(_raised(error))

    assert SECRET not in text
    assert text.startswith(f"{type(error).__name__} at test_dead_letter_text.py:")
    assert text.endswith("(message withheld: it may quote event data)")


def test_our_errors_which_name_fields_and_rules_are_quoted() -> None:
    invalid = InvalidEventError("casetrail.case.opened", [FieldProblem("data.x", "required")])

    assert failure_text(invalid) == str(invalid)
    assert failure_text(RuleBroken("PLAN_HAS_NO_GOALS", "a plan needs a goal")) == (
        "PLAN_HAS_NO_GOALS: a plan needs a goal"
    )
    assert failure_text(ConnectionRefusedError(111, "Connection refused")).endswith(
        "Connection refused"
    )


def _unreadable(problem: str) -> UnreadableStoredEventError:
    invalid = InvalidEventError("casetrail.contact.logged", [FieldProblem("summary", problem)])
    try:
        raise UnreadableStoredEventError("case-c-1", 3, invalid) from invalid
    except UnreadableStoredEventError as error:
        return error


def test_a_stored_event_that_no_longer_decodes_is_told_redacted() -> None:
    # Its message embeds the decoding error's text verbatim: quoted as an EventError, a value
    # a validator quoted reached the log and the dead letter's reason header, kept forever.
    error = _unreadable(f"input {SECRET!r} is not a valid summary")
    assert SECRET in str(error)

    text = failure_text(error)

    assert SECRET not in text
    assert text == (
        "event 3 of stream 'case-c-1' does not decode: invalid event"
        " 'casetrail.contact.logged': summary: input … is not a valid summary"
    )


async def test_a_handler_meeting_one_dead_letters_it_without_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InProcessBus()
    await bus.publisher("t").publish([recorded("c-1", 1, 1)])

    async def reading_it(event: RecordedEvent) -> None:
        raise _unreadable(f"input {SECRET!r} is not a valid summary")

    async with running(bus.subscriber(sample_registry(), "t"), "g", reading_it):
        await eventually(lambda: bool(bus.dead_letters("g")), "the dead letter")
    [letter] = bus.dead_letters("g")
    reason = dict(letter.headers())[REASON].decode()
    assert reason.startswith("handler-failed: event 3 of stream 'case-c-1' does not decode")
    assert SECRET not in reason
    assert SECRET not in caplog.text
