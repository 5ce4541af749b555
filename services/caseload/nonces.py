"""The one-time nonces of the parts a process asks the group's other processes for
(``gathering``), and what it answers a receiver confirming one (``CONFIRMATION_PATH``).

A nonce is awaited while its view is gathered, and confirmed once (``ASKED``). When the view is
given up before every part came (a process not ready answered 503 at once, and the other part
requests were cancelled), a receiver may still be confirming its part: its nonce is kept, given
up, as long as a part is waited for, and answered ``GIVEN_UP`` once, so that receiver answers
503 with no caller suspected. Forgotten at once, it was answered as never issued, and the
receiver refused the part as a forgery, on audit's record with the token of the caller whose
view it was. A nonce never issued, confirmed already, or given up and answered already is
``NOT_ASKED``: a replayed nonce is a forgery as a guessed one is. At most ``NONCES_KEPT`` are
kept, awaited and given up together: a view that would need more is not gathered (``issue``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from enum import IntEnum

NONCES_KEPT = 10_000
"""Nonces kept at once, awaited and given up (a few megabytes): views given up by the hundred
a second, a process of the group not ready, fill them, and further views are refused busy until
the oldest are forgotten."""


class Confirmation(IntEnum):
    """A process's answer to the confirmation of a nonce, as the HTTP status it is sent as."""

    ASKED = 200
    """Awaited: the part was asked for by this process, answered once."""
    GIVEN_UP = 410
    """Issued, but its view was given up: the part is wanted no more, and nobody forged it."""
    NOT_ASKED = 404
    """Never issued, or answered already: a part no process asked for."""


class PartNonces:
    """The nonces of the parts this process is asking for, and of those it gave up lately."""

    def __init__(
        self, given_up_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._given_up_seconds = given_up_seconds
        """How long a given-up nonce is kept: as long as its part was waited for, so a
        receiver that had the part request confirms it within."""
        self._clock = clock
        self._awaited: set[str] = set()
        self._given_up: dict[str, float] = {}
        """When each was given up: in that order, so the oldest are forgotten first."""

    def issue(self, count: int) -> list[str] | None:
        """``count`` new nonces, awaited from now; ``None`` when that would keep more than
        ``NONCES_KEPT``."""
        self._forget_given_up()
        if len(self._awaited) + len(self._given_up) + count > NONCES_KEPT:
            return None
        issued = [secrets.token_urlsafe(32) for _ in range(count)]
        self._awaited.update(issued)
        return issued

    def give_up(self, nonces: Iterable[str]) -> None:
        """The view of ``nonces`` ended: those not confirmed are kept, given up, for
        ``given_up_seconds``."""
        now = self._clock()
        for nonce in nonces:
            if nonce in self._awaited:
                self._awaited.discard(nonce)
                self._given_up[nonce] = now

    def confirm(self, nonce: str) -> Confirmation:
        """What a receiver of ``nonce``'s part is answered; a nonce is answered ``ASKED`` or
        ``GIVEN_UP`` once only."""
        self._forget_given_up()
        if nonce in self._awaited:
            self._awaited.discard(nonce)
            return Confirmation.ASKED
        if self._given_up.pop(nonce, None) is not None:
            return Confirmation.GIVEN_UP
        return Confirmation.NOT_ASKED

    def _forget_given_up(self) -> None:
        forgotten_before = self._clock() - self._given_up_seconds
        while self._given_up:
            oldest, given_up_at = next(iter(self._given_up.items()))
            if given_up_at > forgotten_before:
                return
            del self._given_up[oldest]
