"""Superseded schema versions and the upcasters that bring their stored data forward.

The models here are never registered as the current shape of their type; they exist so that
their JSON Schemas stay published for subscribers still reading old events, and so that each
upcaster can validate old data before transforming it (bad old data fails with the old field's
name instead of a confusing error about the new shape).
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from events.catalog.base import CaseEvent, Identifier
from events.catalog.cases import ReferralSource
from events.catalog.clients import ContactDetails, LanguageTag, PersonalIdentifier, PersonName
from events.catalog.values import NeedCategory, SensitiveNote
from events.errors import FieldProblem, InvalidEventError


class CaseOpenedV1(CaseEvent):
    """A case was opened for a client, with the one need that brought them to the agency."""

    event_type: ClassVar[str] = "casetrail.case.opened"
    schema_version: ClassVar[int] = 1

    case_id: Identifier
    client_id: Identifier
    referral_source: ReferralSource
    presenting_need: SensitiveNote


def upcast_case_opened_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 recorded a single free-text need; v2 records categorised needs.

    The old text becomes the description of one need of category ``other``: the category was
    never captured in v1, and guessing it from the text would put words in the worker's mouth.
    """
    old = _validated(CaseOpenedV1, data).model_dump(mode="json")
    need = old.pop("presenting_need")
    old["presenting_needs"] = [{"category": NeedCategory.OTHER.value, "description": need}]
    return old


class ClientRegisteredV1(CaseEvent):
    """A person seeking help was registered as a client of the agency."""

    # The title it was published under while it was current: v1.json stays as subscribers saw it.
    model_config = ConfigDict(title="ClientRegistered")

    event_type: ClassVar[str] = "casetrail.client.registered"
    schema_version: ClassVar[int] = 1
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    name: PersonName
    date_of_birth: date | None = None
    identifiers: tuple[PersonalIdentifier, ...] = ()
    contact: ContactDetails | None = None
    preferred_language: LanguageTag | None = None


def upcast_client_registered_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 records whom the registrar confirmed the person is not; v1 never recorded it, so no
    one (a v1 registration that overrode a duplicate warning cannot say which one)."""
    old = _validated(ClientRegisteredV1, data).model_dump(mode="json")
    old["confirmed_not_duplicate_of"] = []
    return old


def _validated(model: type[CaseEvent], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = [
            FieldProblem(
                ".".join(str(part) for part in detail["loc"]) or "data",
                f"{detail['msg']} (schema version {model.schema_version})",
            )
            for detail in error.errors()
        ]
        raise InvalidEventError(model.event_type, problems) from None
