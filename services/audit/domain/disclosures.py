"""The accounting of disclosures (HIPAA 45 CFR 164.528 shape): which recorded events of a case
were disclosures outside the agency's care team, and what each disclosed.

What counts, decided from the recorded events alone:

* a read (``record.accessed``) by someone of **another agency** (a partner reading the referred
  scope under the client's consent);
* a read under a **break-the-glass** emergency access (it names one, or the rule
  ``break-glass``), whoever made it: it is outside the care team by definition;
* a read for purpose **legal_obligation** (a disclosure required by law: an auditor exporting
  for a court, say; the external recipient is not recorded, so the reader stands for it);
* a **referral** (``referral.made``): the referred scope goes to the provider, on the basis the
  referral recorded (consent, legal obligation or emergency).

Not disclosures (internal uses, or to the individual, which 164.528(a)(1) leaves out): reads
by the agency's own staff for direct care, coordination, supervision or confidentiality review,
and the client's own reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from casetrail_platform.policy.vocabulary import REFERRED_SECTIONS
from events.catalog.access import (
    AccessPurpose,
    DisclosureBasis,
    RecipientKind,
    RecordAccessed,
    RecordSection,
)
from events.catalog.base import Role
from events.catalog.referrals import ReferralMade
from events.envelope import Actor, RecordedEvent, to_micros
from services.audit.domain.summaries import consents_named

BREAK_GLASS_RULE = "break-glass"

DisclosureKey = tuple[int, str]
"""(disclosed-at in microseconds, event id): the accounting's order, and a page cursor."""


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: RecipientKind
    recipient_id: str
    agency_id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Disclosure:
    recorded: RecordedEvent
    """The event it is drawn from."""
    case_id: str
    recipient: Recipient
    disclosed_by: Actor
    sections: tuple[RecordSection, ...]
    fields: tuple[str, ...]
    purpose: AccessPurpose | None
    basis: DisclosureBasis | None
    consent_ids: tuple[str, ...]
    """Every consent it rested on (a partner's read: each referral's own), in order."""
    emergency_access_id: str | None
    rule: str
    description: str

    @property
    def disclosed_at(self) -> datetime:
        # When casetrail made the disclosure durable, not the occurred-at its actor stated: an
        # entry made after the fact (a referral dated days back) was disclosed when recorded,
        # and a period must not lose it to a date the actor chose.
        return self.recorded.recorded_at

    @property
    def key(self) -> DisclosureKey:
        return (to_micros(self.disclosed_at), str(self.recorded.event_id))


def disclosure_of(
    recorded: RecordedEvent,
    home_agency: str,
    consent_purposes: Mapping[str, AccessPurpose] | None = None,
) -> Disclosure | None:
    """The disclosure ``recorded`` was, or ``None`` for an internal use (or no read at all)."""
    event = recorded.event
    if isinstance(event, RecordAccessed):
        return _read(recorded, event, home_agency)
    if isinstance(event, ReferralMade) and event.provider.provider_id != home_agency:
        return _referral(recorded, event, consent_purposes or {})
    return None


def read_is_disclosure(data: Mapping[str, Any], home_agency: str) -> bool:
    """Whether a ``record.accessed`` is a disclosure, from its data as JSON at the current
    schema version (``RecordedEvent.data``): audit indexes every read it receives, and
    decoding each only to find it internal would cost more than the read's own record."""
    emergency = data.get("emergency_access_id") is not None or data.get("rule") == BREAK_GLASS_RULE
    return _outside_care(
        data.get("accessor_agency_id") or home_agency,
        data.get("accessor_role"),
        emergency,
        data.get("purpose"),
        home_agency,
    )


def _outside_care(
    agency: str, role: object, emergency: bool, purpose: object, home_agency: str
) -> bool:
    """The rule of the module's docstring, for a read by ``role`` of ``agency``."""
    if role == Role.CLIENT and agency == home_agency and not emergency:
        return False
    return agency != home_agency or emergency or purpose == AccessPurpose.LEGAL_OBLIGATION


def _read(recorded: RecordedEvent, event: RecordAccessed, home_agency: str) -> Disclosure | None:
    agency = event.accessor_agency_id or home_agency
    emergency = event.emergency_access_id is not None or event.rule == BREAK_GLASS_RULE
    if not _outside_care(agency, event.accessor_role, emergency, event.purpose, home_agency):
        return None
    outside = agency != home_agency
    legal = event.purpose is AccessPurpose.LEGAL_OBLIGATION
    if event.consent_ids:
        basis: DisclosureBasis | None = DisclosureBasis.CONSENT
    elif emergency:
        basis = DisclosureBasis.EMERGENCY
    elif legal:
        basis = DisclosureBasis.LEGAL_OBLIGATION
    else:
        basis = None
    shown = ", ".join(section.value for section in event.sections)
    how = {
        DisclosureBasis.CONSENT: f"under {consents_named(event.consent_ids)}",
        DisclosureBasis.EMERGENCY: "under break-the-glass emergency access"
        + (f" {event.emergency_access_id}" if event.emergency_access_id else ""),
        DisclosureBasis.LEGAL_OBLIGATION: "under legal obligation (external recipient not"
        " recorded: the reader stands for it)",
        None: "with no disclosure basis recorded",
    }[basis]
    return Disclosure(
        recorded=recorded,
        case_id=event.case_id,
        recipient=Recipient(
            RecipientKind.AGENCY if outside else RecipientKind.PERSON,
            agency if outside else event.accessor_id,
            agency,
        ),
        disclosed_by=Actor(event.accessor_id, event.accessor_role),
        sections=event.sections,
        fields=event.fields,
        purpose=event.purpose,
        basis=basis,
        consent_ids=event.consent_ids,
        emergency_access_id=event.emergency_access_id,
        rule=event.rule,
        description=f"{event.accessor_id} ({agency}) read {shown}"
        f" through {recorded.metadata.source} {how}"
        + (f"; sensitive fields shown: {len(event.fields)}" if event.fields else ""),
    )


def _referral(
    recorded: RecordedEvent, event: ReferralMade, consent_purposes: Mapping[str, AccessPurpose]
) -> Disclosure:
    basis = event.disclosure_basis
    if basis is DisclosureBasis.CONSENT and event.consent_id is not None:
        purpose: AccessPurpose | None = consent_purposes.get(event.consent_id)
    elif basis is None:
        purpose = None
    else:
        purpose = AccessPurpose(basis.value)
    sections = tuple(s for s in RecordSection if s in REFERRED_SECTIONS)
    fields = tuple(
        f"{ReferralMade.event_type}.{name}" for name in sorted(ReferralMade.sensitive_fields())
    )
    provider = event.provider
    return Disclosure(
        recorded=recorded,
        case_id=event.case_id,
        recipient=Recipient(
            RecipientKind.AGENCY, provider.provider_id, provider.provider_id, provider.name
        ),
        disclosed_by=recorded.metadata.actor,
        sections=sections,
        fields=fields,
        purpose=purpose,
        basis=basis,
        consent_ids=() if event.consent_id is None else (event.consent_id,),
        emergency_access_id=None,
        rule="",
        description=f"referral {event.referral_id} sent to {provider.name}"
        f" ({provider.provider_id}): the referred need, service asked for, urgency and reason"
        + (f", on the basis of {basis.value}" if basis else ", no disclosure basis recorded")
        + (f" {event.consent_id}" if event.consent_id else ""),
    )
