"""Events about the client as a person, independent of any one case."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from events.catalog.base import CaseEvent, Identifier, NonEmptyStr, Personal
from events.catalog.values import CatalogValue, Day, Note, require_unique

PhoneNumber = Annotated[str, Field(min_length=3, max_length=32, pattern=r"^\+?[0-9 ().-]+$")]
EmailAddress = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
LanguageTag = Annotated[
    str,
    Field(
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="BCP 47 language tag, e.g. fr or it-CH",
    ),
]


PersonalText = Annotated[NonEmptyStr, Personal]


class PersonName(CatalogValue):
    """How the client is named; the family name is optional because not every culture has one."""

    given_names: PersonalText
    family_name: PersonalText | None = None
    preferred_name: PersonalText | None = None


class PersonalIdentifier(CatalogValue):
    """An identifier issued to the client by some authority (national id, medical record number)."""

    scheme: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[a-z][a-z0-9_.:-]*$",
            description="Which authority issued it, e.g. national_id, passport or "
            "mrn:st-mary-hospital; a scheme may appear twice with different values.",
        ),
    ]
    value: NonEmptyStr


class ContactDetails(CatalogValue):
    """How to reach the client."""

    phone: PhoneNumber | None = None
    email: EmailAddress | None = None
    postal_address: NonEmptyStr | None = None


class ClientRegistered(CaseEvent):
    """A person seeking help was registered as a client of the agency."""

    event_type: ClassVar[str] = "casetrail.client.registered"
    schema_version: ClassVar[int] = 2
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    name: PersonName
    # Personal data, sealed under the client's key (an erasure forgets them): a date, a list
    # and an object are sealed whole, so that their erased forms (null, [], null) still fit.
    date_of_birth: Annotated[Day | None, Personal] = None
    identifiers: Annotated[tuple[PersonalIdentifier, ...], Personal] = ()
    contact: Annotated[ContactDetails | None, Personal] = None
    preferred_language: LanguageTag | None = None
    confirmed_not_duplicate_of: tuple[Identifier, ...] = Field(
        default=(),
        description="Clients who looked like the same person and whom the registrar confirmed"
        " this person is not (empty when no one looked alike).",
    )

    @field_validator("identifiers")
    @classmethod
    def _identifiers_are_unique(
        cls, identifiers: tuple[PersonalIdentifier, ...]
    ) -> tuple[PersonalIdentifier, ...]:
        require_unique(((i.scheme, i.value) for i in identifiers), "identifiers (scheme, value)")
        return identifiers

    @field_validator("confirmed_not_duplicate_of")
    @classmethod
    def _others_are_unique(cls, client_ids: tuple[str, ...]) -> tuple[str, ...]:
        require_unique(client_ids, "confirmed_not_duplicate_of")
        return client_ids


class ClientDateOfBirthCorrected(CaseEvent):
    """The client's recorded date of birth was wrong and is corrected (rectification, GDPR
    Art. 16): from this event on, the client's date of birth is ``date_of_birth``, for every
    rule that rests on it (duplicate detection, the age of eligibility decisions). The wrong
    date stays in the registration (the record of what was believed, and when)."""

    event_type: ClassVar[str] = "casetrail.client.date_of_birth_corrected"
    subject_field: ClassVar[str] = "client_id"

    client_id: Identifier
    # Personal, sealed under the client's key as the registration's is: null once erased
    # (the erased form of a date), so the type allows it though a correction always gives one.
    date_of_birth: Annotated[Day | None, Personal] = Field(
        description="The client's date of birth as corrected (null only once the client is erased)."
    )
    reason: Annotated[Note, Personal] = Field(
        description="Why the recorded date was wrong and how the right one is known, e.g."
        " 'birth certificate seen; intake typed 1914 for 1941': personal (it tells of the"
        " client's documents and circumstances), sealed under the client's key."
    )
