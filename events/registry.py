"""The registry of case-event types: stable type name -> model, plus upcasters.

Events stored under an older schema version are brought to the current one by chaining
upcasters (pure functions on the JSON data) before validation against the current model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import ValidationError
from pydantic_core import from_json

from events.catalog.base import CaseEvent
from events.errors import (
    FieldProblem,
    InvalidEventError,
    MissingUpcasterError,
    UnknownEventTypeError,
)
from events.validation import event_problems

if TYPE_CHECKING:
    from casetrail_platform.keys.fields import FieldProtection

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_SEALED_DATA_MARK = b'"ct1~'
"""``events.sealed_values.SEALED_DATA_MARK``: data holding it may have sealed values."""


class EventRegistry:
    def __init__(self, models: Iterable[type[CaseEvent]] = ()) -> None:
        self._models: dict[str, type[CaseEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._superseded: dict[tuple[str, int], type[CaseEvent]] = {}
        self.protection: FieldProtection | None = None
        """Seals sensitive fields before they are stored and opens them when data is decoded
        (``None``: data is stored and read as it is)."""
        for model in models:
            self.register(model)

    def protected(self, protection: FieldProtection) -> EventRegistry:
        """This catalog, sealing and opening sensitive fields with ``protection``."""
        return self._sharing_catalog(protection)

    def _sharing_catalog(self, protection: FieldProtection | None) -> EventRegistry:
        copy = EventRegistry()
        copy._models = self._models
        copy._upcasters = self._upcasters
        copy._superseded = self._superseded
        copy.protection = protection
        return copy

    def seal(
        self, event: CaseEvent, event_id: UUID, data: bytes, *, cached_only: bool = False
    ) -> bytes:
        """The data to store for ``event``: ``data`` with its sensitive values sealed
        (``cached_only``: see ``FieldProtection.seal``); without ``protection``, ``data`` as
        it is, refused if a sensitive value begins like a sealed one."""
        return self._protection().seal(event, event_id, data, cached_only=cached_only)

    def seal_again(self, event: CaseEvent, event_id: UUID) -> bytes:
        """The data to publish of ``event``, decoded from data of an older schema version and
        upcast: sealed again (``FieldProtection.seal_again``)."""
        if self.protection is None:
            return encode(event)
        return self.protection.seal_again(event, event_id, encode(event))

    def published_erased(self, upcast: CaseEvent, published: CaseEvent) -> bool:
        """Whether ``published`` is ``upcast`` (decoded from an event's stored form) as it is
        published once its client's key is destroyed: the erasure marker at every leaf the
        model seals, the rest alike (``FieldProtection.erased``), and the key destroyed as far
        as this reader can tell (``FieldProtection.client_erased``: a reader holding the
        client's live key refuses markers in place of the values it reads)."""
        return self._protection().erased(upcast) == published and self.client_erased(published)

    def client_erased(self, event: CaseEvent) -> bool:
        """Whether this reader takes the key that seals ``event`` as destroyed: what a value
        of it reading as the erasure marker may stand for (``FieldProtection.client_erased``;
        always, for a reader holding no keys)."""
        return self._protection().client_erased(event)

    def holds_in_clear(
        self, event_type: str, stored_version: int, stored: bytes, event_id: str | UUID
    ) -> bool:
        """Whether ``stored`` (data of ``stored_version`` as stored) holds in clear a value the
        current version seals: stored before its field was marked (``events.catalog.legacy``).
        Decoded as a reader holding no key does, so every sealed value reads as its marker."""
        keyless = self._sharing_catalog(None)
        event = keyless.decode(event_type, stored_version, stored, event_id)
        return keyless._protection().holds_in_clear(event, stored)

    @staticmethod
    def is_sealed(data: bytes | str) -> bool:
        """Whether ``data`` may hold sealed values (then ``decode`` needs the event id)."""
        if isinstance(data, str):
            return _SEALED_DATA_MARK.decode() in data
        return _SEALED_DATA_MARK in data

    def open_sealed_values(
        self, event_type: str, schema_version: int, event_id: str | UUID, data: dict[str, Any]
    ) -> bool:
        """Open the sealed values of ``data`` (parsed JSON of ``schema_version``) in place;
        without ``protection``, as the erasure marker (a reader without keys). Whether it held
        any (``FieldProtection.open``)."""
        # Data of a superseded version opens by that version's model: a value it does not
        # open reads as its own field's erasure marker (a code's, a text's).
        model = self._superseded.get((event_type, schema_version)) or self.model_for(event_type)
        return self._protection().open(model, schema_version, str(event_id), data)

    def _protection(self) -> FieldProtection:
        """``protection``, or without it how a reader and writer holding no keys seal and
        open (``WITHHELD``)."""
        if self.protection is not None:
            return self.protection
        from casetrail_platform.keys.fields import (
            WITHHELD,  # only now: it imports the store's guard
        )

        return WITHHELD

    def register(self, model: type[CaseEvent]) -> None:
        existing = self._models.get(model.event_type)
        if existing is not None and existing is not model:
            raise ValueError(f"event type {model.event_type!r} registered twice")
        self._models[model.event_type] = model

    def register_superseded(self, model: type[CaseEvent]) -> None:
        """``model`` is how data of its (type, version) looked: sealed values in such data
        open by its fields (``upcast`` still brings the data forward)."""
        self._superseded[(model.event_type, model.schema_version)] = model

    def register_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """``upcaster`` turns data of ``from_version`` into data of ``from_version + 1``."""
        self._upcasters[(event_type, from_version)] = upcaster

    @property
    def types(self) -> Mapping[str, type[CaseEvent]]:
        return self._models

    def model_for(self, event_type: str) -> type[CaseEvent]:
        try:
            return self._models[event_type]
        except KeyError:
            raise UnknownEventTypeError(event_type) from None

    def require_registered(self, event: CaseEvent) -> None:
        """Refuse to store an event whose type is not this catalog's (checked before writing)."""
        if self._models.get(event.event_type) is not type(event):
            raise UnknownEventTypeError(event.event_type)

    def decode(
        self,
        event_type: str,
        schema_version: int,
        data: bytes | str,
        event_id: str | UUID | None = None,
    ) -> CaseEvent:
        """Load stored JSON data into the current model, upcasting older versions first
        (sealed values opened: they are bound to ``event_id``)."""
        if event_id is not None and self.is_sealed(data):
            document = from_json(data)
            self.open_sealed_values(event_type, schema_version, event_id, document)
            return self.validate(event_type, schema_version, document)
        model = self.model_for(event_type)
        if schema_version == model.schema_version:
            try:
                return model.model_validate_json(data)
            except ValidationError as error:
                raise _invalid(event_type, model, error) from None
        return self.validate(event_type, schema_version, json.loads(data))

    def validate(self, event_type: str, schema_version: int, data: Mapping[str, Any]) -> CaseEvent:
        """Validate untrusted data (e.g. from another language) into a catalog event."""
        model = self.model_for(event_type)
        document = dict(data)
        version = schema_version
        if version > model.schema_version or version < 1:
            raise InvalidEventError(
                event_type,
                [FieldProblem("schema_version", f"unknown version {schema_version}")],
            )
        while version < model.schema_version:
            upcaster = self._upcasters.get((event_type, version))
            if upcaster is None:
                raise MissingUpcasterError(event_type, version, model.schema_version)
            document = upcaster(document)
            version += 1
        try:
            return model.model_validate(document)
        except ValidationError as error:
            raise _invalid(event_type, model, error) from None


def encode(event: CaseEvent) -> bytes:
    return event.model_dump_json().encode()


def _invalid(event_type: str, model: type[CaseEvent], error: ValidationError) -> InvalidEventError:
    return InvalidEventError(event_type, event_problems(error, model))
