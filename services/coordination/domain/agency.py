"""The agency's own configuration: its workers, its programmes and its budget lines.

These are not case facts (no event records them); the agency edits them in ``agency.json``.
Amounts are integer minor units (cents), as in the catalog's ``Money``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from events.catalog.assignment import WorkerCredential
from events.catalog.base import Identifier, NonEmptyStr, Role
from events.catalog.scheduling import ServiceKind
from events.catalog.values import Money, require_unique


def residence_code(text: str) -> str:
    """A jurisdiction code as eligibility compares it: letter case carries no meaning
    ("US-CA-ALAMEDA" is "us-ca-alameda"), so codes are held in lower case, in the agency's
    programmes as in the facts given."""
    return text.lower()


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Worker(_Config):
    """A member of staff who may carry cases, with what they are qualified for."""

    worker_id: Identifier
    name: NonEmptyStr
    role: Role
    credentials: tuple[WorkerCredential, ...] = ()
    caseload_capacity: Annotated[int, Field(ge=0, le=1000)] = Field(
        description="How many open cases the worker may carry at once."
    )
    team: Identifier | None = Field(
        default=None,
        description="The worker's team: its supervisors supervise the worker's cases.",
    )


class Program(_Config):
    """A programme the client may qualify for; every rule given must be met."""

    program_id: Identifier
    name: NonEmptyStr
    min_age: Annotated[int, Field(ge=0, le=150)] | None = None
    max_age: Annotated[int, Field(ge=0, le=150)] | None = None
    max_monthly_income: Money | None = None
    residence_in: tuple[NonEmptyStr, ...] = Field(
        default=(), description="Jurisdictions served (e.g. county codes); anywhere when empty."
    )
    valid_for_days: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="How long a positive decision holds before a new review."
    )

    @field_validator("residence_in")
    @classmethod
    def _residence_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(residence_code(code) for code in codes)


class BudgetLine(_Config):
    """Money the agency may commit to services over a period."""

    budget_line: Identifier
    name: NonEmptyStr
    amount: Money
    funds_service_kinds: tuple[ServiceKind, ...] = Field(
        default=(), description="Kinds of service the line pays for; any kind when empty."
    )


class Agency(_Config):
    agency_id: Identifier
    name: NonEmptyStr
    workers: tuple[Worker, ...] = ()
    programs: tuple[Program, ...] = ()
    budget_lines: tuple[BudgetLine, ...] = ()

    @field_validator("workers")
    @classmethod
    def _unique_workers(cls, workers: tuple[Worker, ...]) -> tuple[Worker, ...]:
        require_unique((worker.worker_id for worker in workers), "worker_id")
        return workers

    @field_validator("programs")
    @classmethod
    def _unique_programs(cls, programs: tuple[Program, ...]) -> tuple[Program, ...]:
        require_unique((program.program_id for program in programs), "program_id")
        return programs

    @field_validator("budget_lines")
    @classmethod
    def _unique_lines(cls, lines: tuple[BudgetLine, ...]) -> tuple[BudgetLine, ...]:
        require_unique((line.budget_line for line in lines), "budget_line")
        return lines

    @model_validator(mode="after")
    def _ages_in_order(self) -> Agency:
        for program in self.programs:
            if (
                program.min_age is not None
                and program.max_age is not None
                and program.min_age > program.max_age
            ):
                raise ValueError(f"program {program.program_id}: min_age is above max_age")
        return self

    def worker(self, worker_id: str) -> Worker | None:
        return next((w for w in self.workers if w.worker_id == worker_id), None)

    def program(self, program_id: str) -> Program | None:
        return next((p for p in self.programs if p.program_id == program_id), None)

    def budget_line(self, budget_line: str) -> BudgetLine | None:
        return next((b for b in self.budget_lines if b.budget_line == budget_line), None)
