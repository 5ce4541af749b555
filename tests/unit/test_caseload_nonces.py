"""The nonces of the parts of the all-worker views (``services.caseload.nonces``): each
confirmed once, and one whose view was given up answered so, once, for as long as a part is
waited for, never as a part nobody asked (review r2a)."""

from __future__ import annotations

import pytest

from services.caseload import nonces
from services.caseload.nonces import Confirmation, PartNonces


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_nonce_is_confirmed_once_and_a_replay_is_not_asked() -> None:
    kept = PartNonces(given_up_seconds=20.0)
    [nonce] = kept.issue(1) or []
    assert kept.confirm(nonce) is Confirmation.ASKED
    kept.give_up([nonce])  # its view answered: a nonce confirmed is kept no longer
    assert kept.confirm(nonce) is Confirmation.NOT_ASKED
    assert kept.confirm("guessed") is Confirmation.NOT_ASKED


def test_a_nonce_whose_view_was_given_up_is_answered_so_once_while_a_part_is_waited_for() -> None:
    """Forgotten as its view was given up, a nonce still being confirmed was answered as never
    issued: its receiver refused the part as a forgery, on the record of the caller whose
    view it was."""
    clock = Clock()
    kept = PartNonces(given_up_seconds=20.0, clock=clock)
    confirmed, still_confirming, replayed, late = kept.issue(4) or []
    assert kept.confirm(confirmed) is Confirmation.ASKED
    kept.give_up([confirmed, still_confirming, replayed, late])
    clock.now += 19.0
    assert kept.confirm(confirmed) is Confirmation.NOT_ASKED
    assert kept.confirm(still_confirming) is Confirmation.GIVEN_UP
    assert kept.confirm(replayed) is Confirmation.GIVEN_UP
    assert kept.confirm(replayed) is Confirmation.NOT_ASKED  # a replay is a forgery
    clock.now += 1.0
    assert kept.confirm(late) is Confirmation.NOT_ASKED  # forgotten once no part is waited for


def test_the_nonces_kept_are_bounded_and_free_again_as_the_given_up_are_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nonces, "NONCES_KEPT", 3)
    clock = Clock()
    kept = PartNonces(given_up_seconds=20.0, clock=clock)
    given_up = kept.issue(2) or []
    kept.give_up(given_up)
    awaited = kept.issue(1)
    assert awaited is not None
    assert kept.issue(1) is None  # two given up and one awaited: none issued, none forgotten
    assert [kept.confirm(nonce) for nonce in given_up] == [Confirmation.GIVEN_UP] * 2
    assert kept.issue(2) is not None  # answered, forgotten
    kept.give_up(awaited)
    assert kept.issue(1) is None
    clock.now += 20.0
    assert kept.issue(1) is not None
