"""The case as intake knows it: opened here, assessed here, reopened here, closed elsewhere.

Closing is the planning service's fact; intake counts the closures it has learnt from the bus.
Every reopening follows a closure, so the case is closed exactly when intake has seen more
closures than it recorded reopenings. Counting (rather than keeping "the last status") gives
the same answer whatever order the bus and the store deliver the two kinds of fact in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from casetrail_platform.commands import (
    AlreadyExists,
    InvalidCommand,
    NotFound,
    require_not_before,
)
from events.catalog.assessment import AssessmentFactors, InitialAssessmentRecorded
from events.catalog.base import CaseEvent
from events.catalog.cases import CaseOpened, CaseReopened
from events.catalog.erasure import ClientErased
from events.envelope import EventMetadata, RecordedEvent
from events.errors import FieldProblem
from services.intake.domain.erasure import require_not_erased
from services.intake.domain.errors import (
    assessment_already_recorded,
    case_closed,
    case_not_closed,
)


def case_stream(case_id: str) -> str:
    return f"case-{case_id}"


@dataclass(frozen=True, slots=True)
class Assessment:
    event: InitialAssessmentRecorded
    recorded: EventMetadata


@dataclass(frozen=True, slots=True)
class Reopening:
    event: CaseReopened
    recorded: EventMetadata


@dataclass(frozen=True, slots=True)
class CaseRecord:
    opened: CaseOpened
    opened_by: EventMetadata
    assessments: tuple[Assessment, ...]
    reopenings: tuple[Reopening, ...]
    current_assessment_id: str | None
    """The initial assessment of the current episode (since the case was last (re)opened)."""
    version: int

    @property
    def case_id(self) -> str:
        return self.opened.case_id

    def is_closed(self, closures: int) -> bool:
        return closures > len(self.reopenings)

    def require_in_order(
        self, occurred_at: datetime | None, *, current_episode: bool = False
    ) -> None:
        """A command on the case happens after the case was opened; ``current_episode``: after
        it was last reopened too (the episode's initial assessment). Stated as happening
        before, it would put the case's history out of order: audit's state as of a moment,
        on the occurred-at basis, would show an assessment before there was a case.
        ``occurred_at``: the command's moment (``CommandContext.moment``: the one it states,
        else now); ``None``: not known, not checked."""
        require_not_before(
            occurred_at, f"case {self.case_id} was opened", self.opened_by.occurred_at
        )
        if current_episode and self.reopenings:
            require_not_before(
                occurred_at,
                f"case {self.case_id} was last reopened",
                self.reopenings[-1].recorded.occurred_at,
            )

    def require_after_reopened_closure(
        self, occurred_at: datetime | None, closures: Sequence[datetime]
    ) -> None:
        """On a reopened case, a command happens after the closure its last reopening followed,
        as planning refuses one dated before the case's last closure: audit's state as it
        happened would show it done on the closed case. ``closures``: when each closure intake's
        log holds happened, in planning's order; it holds the one each reopening followed (the
        reopening was decided on them), else (a log rebuilt and behind) it is not checked."""
        reopened = len(self.reopenings)
        if reopened and len(closures) >= reopened:
            require_not_before(
                occurred_at,
                f"case {self.case_id} was closed before its last reopening",
                closures[reopened - 1],
            )


def case_from(history: Sequence[RecordedEvent]) -> CaseRecord | None:
    record: CaseRecord | None = None
    for recorded in history:
        event = recorded.event
        if isinstance(event, CaseOpened):
            record = CaseRecord(event, recorded.metadata, (), (), None, recorded.sequence)
            continue
        if record is None:
            continue
        assessments, reopenings = record.assessments, record.reopenings
        current = record.current_assessment_id
        if isinstance(event, InitialAssessmentRecorded):
            assessments = (*assessments, Assessment(event, recorded.metadata))
            current = event.assessment_id
        elif isinstance(event, CaseReopened):
            reopenings = (*reopenings, Reopening(event, recorded.metadata))
            current = None
        record = CaseRecord(
            record.opened,
            record.opened_by,
            assessments,
            reopenings,
            current,
            recorded.sequence,
        )
    return record


def decide_opening(
    history: Sequence[RecordedEvent], opened: CaseOpened, erased: ClientErased | None
) -> list[CaseEvent]:
    """``erased``: the client's erasure, if they were erased (from the client's stream)."""
    if history:
        raise AlreadyExists("case", opened.case_id)
    require_not_erased(erased)
    return [opened]


def decide_assessment(
    history: Sequence[RecordedEvent],
    assessment: InitialAssessmentRecorded,
    closures: int,
    erased: ClientErased | None,
    *,
    occurred_at: datetime | None,
) -> list[CaseEvent]:
    """``occurred_at``: when the assessment happened, as the command states it, else now."""
    case = _existing(history, assessment.case_id)
    require_not_erased(erased)
    if case.is_closed(closures):
        raise case_closed(case.case_id)
    case.require_in_order(occurred_at, current_episode=True)
    if case.current_assessment_id is not None:
        raise assessment_already_recorded(case.case_id, case.current_assessment_id)
    return [assessment]


def decide_reopening(
    history: Sequence[RecordedEvent],
    reopened: CaseReopened,
    closures: int,
    erased: ClientErased | None,
    *,
    closed_at: datetime | None,
    occurred_at: datetime | None,
) -> list[CaseEvent]:
    """``closed_at``: when the case was last closed (planning's closure, as the bus brought
    it); ``occurred_at``: when the reopening happened (stated, else now). A reopening dated
    before the closure it reopens would have audit's state as of now, on the occurred-at
    basis, show the open case closed."""
    case = _existing(history, reopened.case_id)
    require_not_erased(erased)
    if not case.is_closed(closures):
        raise case_not_closed(case.case_id)
    case.require_in_order(occurred_at)
    require_not_before(occurred_at, f"case {case.case_id} was last closed", closed_at)
    return [reopened]


def _existing(history: Sequence[RecordedEvent], case_id: str) -> CaseRecord:
    case = case_from(history)
    if case is None:
        raise NotFound("case", case_id)
    return case


def check_factors(factors: AssessmentFactors) -> None:
    """The assessment is the foundation of the case: it must describe the situation somehow."""
    if not any(factors.model_dump().values()):
        raise InvalidCommand(
            [
                FieldProblem(
                    "factors",
                    "describe at least one of psychosocial, biological, psychological,"
                    " cultural, social, economic",
                )
            ]
        )
