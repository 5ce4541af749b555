"""Base types for every case event in the public catalog.

A case event is an immutable fact. Its ``event_type`` is a stable, dotted name that never
contains a Python module path, and ``schema_version`` changes whenever the shape of its data
changes (older stored versions are brought forward by upcasters, see ``events.registry``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

SENSITIVE_MARK = "x-casetrail-sensitive"
"""JSON Schema keyword set on fields that hold special-category data (health, substance use,
mental health, ...). Access control and per-client encryption key off this mark."""

Sensitive = Field(json_schema_extra={SENSITIVE_MARK: True})
"""Use as ``Annotated[str, Sensitive]`` to mark a field as sensitive."""

SensitiveText = Annotated[str, Sensitive]

PERSONAL_MARK = "x-casetrail-personal"
"""JSON Schema keyword set on fields that identify the client as a person (name, date of birth,
identifiers, contact details). Sealed under the client's key like sensitive data, so that an
erasure leaves no trace of who the client was; disclosed by the ordinary rules (a coordinator
may read a name), since they are not special-category data.

A marked field's erased form fits its type: text reads ``"[erased]"``, a code ``"erased"``,
a list ``[]`` and anything else (a date, an object) ``null``."""

Personal = Field(json_schema_extra={PERSONAL_MARK: True})
"""Use as ``Annotated[str, Personal]`` to mark a field as personal data."""

SEALED_MARKS = (SENSITIVE_MARK, PERSONAL_MARK)
"""The marks whose values are stored, published and exported sealed (see the platform's keys)."""

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=500)]
Identifier = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
LongText = Annotated[str, Field(max_length=20_000)]


class Role(StrEnum):
    """Who may act on a case. The role travels with every event as part of the actor."""

    RECEPTIONIST = "receptionist"
    INTAKE_WORKER = "intake_worker"
    COORDINATOR = "coordinator"
    CASE_MANAGER = "case_manager"
    SOCIAL_WORKER = "social_worker"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    CLIENT = "client"
    PARTNER_AGENCY = "partner_agency"
    SYSTEM = "system"


class CaseEvent(BaseModel):
    """Base of every event in the catalog.

    Subclasses set ``event_type`` (stable public name, e.g. ``casetrail.case.opened``) and
    ``schema_version``. ``subject_field`` names the field that identifies the stream's subject
    (the case id for nearly every event).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    subject_field: ClassVar[str] = "case_id"

    @property
    def subject(self) -> str:
        value = getattr(self, self.subject_field)
        return str(value)

    def updated(self, **changes: Any) -> Self:
        """This event with ``changes``, validated as any data of its model is (pydantic's
        ``ValidationError`` when they break its rules). The one way to change a catalog value:
        ``model_copy(update=...)`` validates nothing, so a change could build an event its own
        model refuses (a repeated id, a text over its bound) that the store would still write
        and no reader could read back."""
        return self.model_validate({**dict(self), **changes})

    @classmethod
    def sensitive_fields(cls) -> frozenset[str]:
        """Names of the top-level fields that are, or contain, data marked sensitive."""
        schema = cls.model_json_schema()
        definitions = schema.get("$defs", {})
        return frozenset(
            name
            for name, field_schema in schema.get("properties", {}).items()
            if _mentions_sensitive(field_schema, definitions, seen=set())
        )


def _mentions_sensitive(schema: Any, definitions: dict[str, Any], seen: set[str]) -> bool:
    if isinstance(schema, dict):
        if schema.get(SENSITIVE_MARK):
            return True
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference not in seen:
            seen.add(reference)
            target = definitions.get(reference.rsplit("/", 1)[-1], {})
            if _mentions_sensitive(target, definitions, seen):
                return True
        return any(_mentions_sensitive(value, definitions, seen) for value in schema.values())
    if isinstance(schema, list):
        return any(_mentions_sensitive(item, definitions, seen) for item in schema)
    return False
