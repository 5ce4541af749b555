"""Intake's refusals: the platform's kinds, with the rule names intake uses."""

from __future__ import annotations

from collections.abc import Sequence

from casetrail_platform.commands import AlreadyExists, RuleBroken
from services.intake.domain.matching import DuplicateCandidate

CASE_NOT_CLOSED = "CASE_NOT_CLOSED"
CASE_CLOSED = "CASE_CLOSED"
INITIAL_ASSESSMENT_ALREADY_RECORDED = "INITIAL_ASSESSMENT_ALREADY_RECORDED"


class PossibleDuplicateClient(AlreadyExists):
    """The person may already be a client; the caller must look at the candidates first."""

    def __init__(self, candidates: Sequence[DuplicateCandidate], *, more: bool = False) -> None:
        """``more``: there are other candidates than ``candidates`` (too many for a refusal)."""
        self.candidates = tuple(candidates)
        ids = ", ".join(candidate.client_id for candidate in self.candidates)
        # What to do comes before the ids: a status's message is cut past a few hundred bytes.
        many = " (more than named here: FindPossibleDuplicates lists them)" if more else ""
        super().__init__(
            "client",
            self.candidates[0].client_id,
            "the person may already be registered: look at the candidates with"
            " FindPossibleDuplicates, then send again with confirmed_not_duplicate if this is"
            f" someone else{many}: client {ids}",
        )


def case_not_closed(case_id: str) -> RuleBroken:
    return RuleBroken(
        CASE_NOT_CLOSED,
        f"case {case_id} is not closed, so it cannot be reopened",
        subject=f"case/{case_id}",
    )


def case_closed(case_id: str) -> RuleBroken:
    return RuleBroken(
        CASE_CLOSED, f"case {case_id} is closed; reopen it first", subject=f"case/{case_id}"
    )


def assessment_already_recorded(case_id: str, assessment_id: str) -> RuleBroken:
    return RuleBroken(
        INITIAL_ASSESSMENT_ALREADY_RECORDED,
        f"case {case_id} already has initial assessment {assessment_id} since it was opened",
        subject=f"case/{case_id}",
        assessment_id=assessment_id,
    )
