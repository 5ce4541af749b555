"""The agency's own configuration: its workers, its programmes and its budget lines.

These are not case facts (no event records them); the agency edits them in ``agency.json``.
Amounts are integer minor units (cents), as in the catalog's ``Money``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from casetrail_platform.limits import MAX_AMOUNT_MINOR_UNITS, MAX_VALID_FOR_DAYS
from events.catalog.assignment import WorkerCredential
from events.catalog.base import Identifier, NonEmptyStr, Role
from events.catalog.scheduling import ServiceKind
from events.catalog.values import Money, require_unique


def residence_code(text: str) -> str:
    """A jurisdiction code as eligibility compares it: letter case carries no meaning
    ("US-CA-ALAMEDA" is "us-ca-alameda"), so codes are held in lower case, in the agency's
    programmes as in the facts given."""
    return text.lower()


def _carried_by_the_apis(money: Money) -> Money:
    if money.amount_minor_units > MAX_AMOUNT_MINOR_UNITS:
        raise ValueError(
            f"amount_minor_units must be at most {MAX_AMOUNT_MINOR_UNITS}, the largest amount"
            " the APIs carry (a 64-bit integer)"
        )
    return money


AgencyMoney = Annotated[Money, AfterValidator(_carried_by_the_apis)]
"""An amount of the agency file: one the APIs can carry, as every amount a request gives is
(a line of 2**64 cents was loaded, then every reservation on it and every read of it failed
building the answer's ``int64``)."""


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
    max_monthly_income: AgencyMoney | None = None
    residence_in: tuple[NonEmptyStr, ...] = Field(
        default=(), description="Jurisdictions served (e.g. county codes); anywhere when empty."
    )
    valid_for_days: Annotated[int, Field(ge=1, le=MAX_VALID_FOR_DAYS)] | None = Field(
        default=None,
        description="How long a positive decision holds before a new review: at most a"
        " century, so that its last day is one the catalog's dates hold.",
    )

    @field_validator("residence_in")
    @classmethod
    def _residence_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(residence_code(code) for code in codes)


class BudgetLine(_Config):
    """Money the agency may commit to services over a period."""

    budget_line: Identifier
    name: NonEmptyStr
    amount: AgencyMoney
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
