"""Who carries the case: the coordinator assigns a worker whose qualifications fit the needs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Role
from events.catalog.values import (
    CatalogValue,
    Day,
    NeedCategory,
    SensitiveNeedCategory,
    require_unique,
)

CASE_CARRYING_ROLES = frozenset({Role.CASE_MANAGER, Role.SOCIAL_WORKER})
"""Roles that can carry a case; a coordinator assigns but does not take the case personally."""


class CredentialKind(StrEnum):
    """What sort of qualification a credential is."""

    DEGREE = "degree"
    LICENCE = "licence"
    CERTIFICATION = "certification"


class WorkerCredential(CatalogValue):
    """A qualification of the worker, e.g. an MSW degree, an LMSW licence or C-ASWCM."""

    kind: CredentialKind
    name: NonEmptyStr
    issued_by: NonEmptyStr | None = None
    valid_until: Day | None = None


COUNSELING_NEEDS = frozenset(
    {NeedCategory.COUNSELING, NeedCategory.MENTAL_HEALTH, NeedCategory.SUBSTANCE_USE}
)
"""Needs that call for counseling, which only a licensed social worker may give: a case manager
may not counsel, and refers the client out instead (a need an outside provider took on no longer
calls for a licence)."""

COUNSELING_LICENCES = ("LBSW", "LMSW", "LCSW")
"""The licences (``CredentialKind.LICENCE``, by name) that let a social worker counsel."""


def counseling_licence(
    role: Role, credentials: Iterable[WorkerCredential], on: date
) -> WorkerCredential | None:
    """The worker's licence that allows counseling, valid on ``on``, if any: the one rule of
    who may counsel, for every service that learns a worker's role and credentials (from the
    agency's staff file, or from ``CaseAssigned`` and ``CaseReassigned``)."""
    if role is not Role.SOCIAL_WORKER:
        return None
    return next(
        (
            credential
            for credential in credentials
            if credential.kind is CredentialKind.LICENCE
            and credential.name.upper() in COUNSELING_LICENCES
            and (credential.valid_until is None or credential.valid_until >= on)
        ),
        None,
    )


def _check_case_carrying(role: Role) -> Role:
    if role not in CASE_CARRYING_ROLES:
        allowed = ", ".join(sorted(CASE_CARRYING_ROLES))
        raise ValueError(f"worker_role must be a role that carries cases ({allowed})")
    return role


class CaseAssigned(CaseEvent):
    """The case was assigned to a worker whose qualifications fit the client's needs."""

    event_type: ClassVar[str] = "casetrail.case.assigned"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    worker_id: Identifier
    worker_role: Role
    worker_team: Identifier | None = Field(
        default=None,
        description="The worker's team: its supervisors supervise the case (need-to-know).",
    )
    credentials: tuple[WorkerCredential, ...] = ()
    matched_needs: tuple[SensitiveNeedCategory, ...] = Field(
        default=(), description="The client's needs this worker was chosen for."
    )
    reason: NonEmptyStr

    @field_validator("worker_role")
    @classmethod
    def _role_carries_cases(cls, role: Role) -> Role:
        return _check_case_carrying(role)

    @field_validator("matched_needs")
    @classmethod
    def _needs_are_unique(cls, needs: tuple[NeedCategory, ...]) -> tuple[NeedCategory, ...]:
        require_unique(needs, "matched_needs")
        return needs


class CaseReassigned(CaseEvent):
    """The case was handed from one worker to another."""

    event_type: ClassVar[str] = "casetrail.case.reassigned"
    schema_version: ClassVar[int] = 2

    case_id: Identifier
    previous_worker_id: Identifier
    worker_id: Identifier
    worker_role: Role
    worker_team: Identifier | None = Field(
        default=None,
        description="The new worker's team: its supervisors supervise the case (need-to-know).",
    )
    credentials: tuple[WorkerCredential, ...] = ()
    reason: NonEmptyStr

    @field_validator("worker_id")
    @classmethod
    def _worker_changes(cls, worker_id: str, info: ValidationInfo) -> str:
        if worker_id == info.data.get("previous_worker_id"):
            raise ValueError("worker_id must differ from previous_worker_id")
        return worker_id

    @field_validator("worker_role")
    @classmethod
    def _role_carries_cases(cls, role: Role) -> Role:
        return _check_case_carrying(role)
