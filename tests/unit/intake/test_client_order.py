"""The commands on a client's own stream are not dated before the events they follow: a
correction before the registration or the latest correction, a hold before the registration,
its release before it was placed, an erasure before the latest change of the record. Audit's
client record as it happened (``basis`` occurred) folds the client's events by the moments
they state: accepted, such a command showed the old date of birth, or the released hold still
in force, for good. Refused as the case commands are (``require_not_before``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from casetrail_platform.commands import InvalidCommand
from events.catalog.base import CaseEvent
from events.catalog.clients import ClientDateOfBirthCorrected, ClientRegistered, PersonName
from events.catalog.erasure import ClientErased, RetentionHoldPlaced, RetentionHoldReleased
from events.envelope import RecordedEvent
from services.intake.domain.corrections import decide_correction
from services.intake.domain.erasure import decide_erasure, decide_hold, decide_release
from tests.unit.intake.support import recorded

CLIENT = "c1"
REGISTERED_AT = datetime(2024, 2, 1, 9, tzinfo=UTC)
REGISTRATION = ClientRegistered(
    client_id=CLIENT,
    name=PersonName(given_names="Marco", family_name="Bellini"),
    date_of_birth=date(1995, 3, 14),
)
HOLD = RetentionHoldPlaced(client_id=CLIENT, hold_id="h1", legal_basis="Court order 12/345")
ERASURE = ClientErased(client_id=CLIENT, request_reference="dms://dsr/1")
TODAY = date(2024, 3, 1)


def corrected(born: date) -> ClientDateOfBirthCorrected:
    return ClientDateOfBirthCorrected(client_id=CLIENT, date_of_birth=born, reason="ID card seen")


def stream(*events: tuple[CaseEvent, datetime]) -> list[RecordedEvent]:
    """The client's stream: the registration at ``REGISTERED_AT``, then ``events`` at theirs."""
    return [
        recorded(event, f"client-{CLIENT}", number, occurred_at=at)
        for number, (event, at) in enumerate(((REGISTRATION, REGISTERED_AT), *events), start=1)
    ]


def refusal(refused: pytest.ExceptionInfo[InvalidCommand]) -> str:
    [problem] = refused.value.violations
    assert problem.field == "context.occurred_at"
    return problem.problem


def test_a_correction_follows_the_registration_and_the_latest_correction() -> None:
    registered = stream()
    with pytest.raises(InvalidCommand) as before_registration:
        decide_correction(
            registered,
            corrected(date(1950, 3, 14)),
            False,
            occurred_at=REGISTERED_AT - timedelta(days=30),
        )
    assert (
        f"must not be before client {CLIENT} was registered ({REGISTERED_AT.isoformat()})"
        in refusal(before_registration)
    )
    first_at = REGISTERED_AT + timedelta(days=2)
    once = stream((corrected(date(1950, 3, 14)), first_at))
    with pytest.raises(InvalidCommand) as before_correction:
        decide_correction(
            once, corrected(date(1950, 3, 15)), False, occurred_at=first_at - timedelta(hours=1)
        )
    assert (
        f"must not be before the date of birth of client {CLIENT} was last corrected"
        f" ({first_at.isoformat()})" in refusal(before_correction)
    )
    # The same moment is in order.
    assert decide_correction(
        registered, corrected(date(1950, 3, 14)), False, occurred_at=REGISTERED_AT
    )
    assert decide_correction(once, corrected(date(1950, 3, 15)), False, occurred_at=first_at)


def test_a_hold_follows_the_registration_and_its_release_the_hold() -> None:
    with pytest.raises(InvalidCommand) as placed:
        decide_hold(stream(), HOLD, occurred_at=REGISTERED_AT - timedelta(minutes=1))
    assert f"must not be before client {CLIENT} was registered" in refusal(placed)
    assert decide_hold(stream(), HOLD, occurred_at=REGISTERED_AT) == [HOLD]

    placed_at = REGISTERED_AT + timedelta(days=3)
    held = stream((HOLD, placed_at))
    with pytest.raises(InvalidCommand) as released:
        decide_release(held, CLIENT, "h1", None, occurred_at=placed_at - timedelta(days=1))
    assert f"must not be before retention hold h1 was placed ({placed_at.isoformat()})" in refusal(
        released
    )
    assert decide_release(held, CLIENT, "h1", None, occurred_at=placed_at) == [
        RetentionHoldReleased(client_id=CLIENT, hold_id="h1")
    ]


def test_an_erasure_follows_the_latest_change_of_the_clients_record() -> None:
    """Held, released, then corrected (the latest by its stated moment, not the stream's
    order): an erasure dated before the release would show the client erased while held."""
    placed_at = REGISTERED_AT + timedelta(days=1)
    released_at = REGISTERED_AT + timedelta(days=5)
    corrected_at = REGISTERED_AT + timedelta(days=3)
    changed = stream(
        (HOLD, placed_at),
        (RetentionHoldReleased(client_id=CLIENT, hold_id="h1"), released_at),
        (corrected(date(1950, 3, 14)), corrected_at),
    )
    with pytest.raises(InvalidCommand) as erased:
        decide_erasure(changed, ERASURE, TODAY, occurred_at=released_at - timedelta(hours=1))
    assert (
        f"must not be before retention hold h1 was released ({released_at.isoformat()})"
        in refusal(erased)
    )
    with pytest.raises(InvalidCommand) as unheld:
        decide_erasure(stream(), ERASURE, TODAY, occurred_at=REGISTERED_AT - timedelta(days=1))
    assert f"must not be before client {CLIENT} was registered" in refusal(unheld)
    assert decide_erasure(changed, ERASURE, TODAY, occurred_at=released_at) == [ERASURE]
