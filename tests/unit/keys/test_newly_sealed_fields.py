"""The fields the rev21 reviews found travelling in clear (a consent's sensitive categories, free
text that tells of the client's health, personal details): sealed under the client's key, opened
for a reader holding it, unreadable once the client is erased; older versions stored in clear
still read, upcast, and are sealed when published again; the policy's consent facts fail closed
once the categories no longer open."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from casetrail_platform.keys.fields import sensitive_values
from casetrail_platform.ledger.export import canonical_of_record
from casetrail_platform.policy.facts import entry_of, fold
from events.catalog.access import ConsentGranted, ConsentRevoked, SensitiveCategory
from events.catalog.assessment import InitialAssessmentRecorded
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened, DischargePlanned
from events.catalog.eligibility import EligibilityDetermined
from events.catalog.erasure import RetentionHoldPlaced, RetentionHoldReleased
from events.catalog.examples import example_events
from events.catalog.funding import InsuranceClaimDecided, InsuranceClaimFiled
from events.catalog.planning import GoalAdded, GoalDropped, GoalRevised, PlanDrafted
from events.catalog.referrals import ReferralAccepted, ReferralDeclined
from events.catalog.scheduling import ServiceCancelled, ServiceRescheduled, ServiceScheduled
from events.catalog_registry import build_registry
from events.cloudevents import KafkaRecord, from_kafka_binary, to_kafka_binary, to_structured
from events.envelope import RecordedEvent, StoredEnvelope, to_micros
from events.registry import EventRegistry, encode
from events.sealed_values import ERASED_TEXT
from tests.unit.keys.support import keyring_of, protected

CANARY = "CANARY-substance-detox-7c1e"

NEWLY_SEALED: list[tuple[type[CaseEvent], str]] = [
    (ServiceCancelled, "reason"),
    (ServiceRescheduled, "reason"),
    (ServiceRescheduled, "location.address"),
    (ServiceScheduled, "location.address"),
    (PlanDrafted, "goals[0].tasks[0].description"),
    (GoalAdded, "goal.tasks[0].description"),
    (GoalRevised, "goal.tasks[0].description"),
    (GoalRevised, "reason"),
    (GoalDropped, "reason"),
    (DischargePlanned, "criteria[0]"),
    (DischargePlanned, "aftercare[0]"),
    (ReferralDeclined, "reason"),
    (ReferralAccepted, "contact_person"),
    (InsuranceClaimDecided, "reason"),
    (InsuranceClaimFiled, "policy_number"),
    (ConsentRevoked, "reason"),
    (EligibilityDetermined, "reasons[0]"),
    (EligibilityDetermined, "reasons[2]"),
    (EligibilityDetermined, "facts.residence"),
    (InitialAssessmentRecorded, "factors.social"),
    (InitialAssessmentRecorded, "factors.economic"),
    (InitialAssessmentRecorded, "strengths[0]"),
    (InitialAssessmentRecorded, "resources[1]"),
    (CaseOpened, "referral_source.name"),
    (ConsentGranted, "recipient.name"),
    (ConsentGranted, "document_reference"),
    (RetentionHoldPlaced, "legal_basis"),
    (RetentionHoldReleased, "reason"),
]
"""(model, path of a leaf) newly sealed; the path as ``sensitive_values`` names it."""


def _example(model: type[CaseEvent]) -> CaseEvent:
    return next(e for e in example_events() if e.event_type == model.event_type)


def _with_canary(model: type[CaseEvent], path: str) -> CaseEvent:
    """The catalog's example of ``model`` with ``CANARY`` at ``path``."""
    document: Any = _example(model).model_dump(mode="json")
    *parents, last = path.replace("[", ".[").split(".")
    holder = document
    for part in parents:
        holder = holder[int(part[1:-1])] if part.startswith("[") else holder[part]
    if last.startswith("["):
        holder[int(last[1:-1])] = CANARY
    else:
        holder[last] = CANARY
    return model.model_validate(document)


def _envelope(event_id: UUID) -> StoredEnvelope:
    moment = to_micros(datetime(2024, 3, 5, 9, 0, tzinfo=UTC))
    return StoredEnvelope(
        event_id=str(event_id),
        source="coordination",
        actor_id="worker-ana",
        actor_role=Role.SOCIAL_WORKER.value,
        correlation_id=str(UUID(int=7)),
        causation_id=None,
        occurred_at=moment,
        recorded_at=moment,
    )


def _read(
    registry: EventRegistry, event_type: str, version: int, data: bytes, event_id: UUID
) -> RecordedEvent:
    """A record as a store reads it back (decoded with ``registry``)."""
    return RecordedEvent.stored(
        stream="case-case-0001",
        sequence=1,
        position=1,
        event_type=event_type,
        subject="case-0001",
        schema_version=version,
        data=data,
        registry=registry,
        envelope=_envelope(event_id),
    )


@pytest.mark.parametrize(("model", "path"), NEWLY_SEALED, ids=lambda p: getattr(p, "__name__", p))
def test_the_field_is_sealed_opened_for_a_key_holder_and_erased_with_the_key(
    model: type[CaseEvent], path: str
) -> None:
    event = _with_canary(model, path)
    assert sensitive_values(event).get(path) == CANARY
    registry = protected()
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event))
    assert CANARY.encode() not in sealed
    # An entitled reader (a service holding the keys) reads the text as written.
    opened = registry.decode(model.event_type, model.schema_version, sealed, event_id)
    assert opened == event
    # Without keys, and once the client's key is destroyed: the erasure marker, nothing else.
    withheld = build_registry().decode(model.event_type, model.schema_version, sealed, event_id)
    assert sensitive_values(withheld)[path] == ERASED_TEXT
    assert registry.protection is not None
    keyring_of(registry).destroy(registry.protection.owner_of(event))
    erased = registry.decode(model.event_type, model.schema_version, sealed, event_id)
    assert sensitive_values(erased)[path] == ERASED_TEXT
    assert CANARY not in encode(erased).decode()


@pytest.mark.parametrize(("model", "path"), NEWLY_SEALED, ids=lambda p: getattr(p, "__name__", p))
def test_data_of_the_version_before_stored_in_clear_still_reads_and_is_sealed_when_published(
    model: type[CaseEvent], path: str
) -> None:
    event = _with_canary(model, path)
    old_version = model.schema_version - 1
    stored = encode(event)  # the shape did not change: v1 data in clear, as stored before
    registry = protected()
    event_id = uuid4()
    record = _read(registry, model.event_type, old_version, stored, event_id)
    assert record.event == event
    assert record.stored_form is not None
    assert record.stored_form.schema_version == old_version
    # Published upcast: the current version's data seals the value again, as the relay hands
    # it out (it was handed out in clear: only data already holding a sealed value was sealed).
    assert CANARY.encode() not in registry.seal_again(record.event, event_id)
    assert CANARY.encode() not in record.data
    assert CANARY.encode() not in to_kafka_binary(record).value
    assert CANARY not in json.dumps(to_structured(record)["data"])
    # A reader holding no key reads the clear old value as it was (nothing to open).
    assert build_registry().decode(model.event_type, old_version, stored) == event


def test_old_data_with_other_values_sealed_reads_the_newly_marked_value_in_clear() -> None:
    """service.scheduled v1 sealed its kind but not the address: both read after the upcast."""
    event = _with_canary(ServiceScheduled, "location.address")
    registry = protected()
    event_id = uuid4()
    document = json.loads(registry.seal(event, event_id, encode(event)))
    document["location"]["address"] = CANARY  # as v1 stored it: only the kind sealed
    stored = json.dumps(document).encode()
    record = _read(registry, ServiceScheduled.event_type, 1, stored, event_id)
    assert record.event == event


def _header_texts(record: KafkaRecord) -> list[bytes]:
    """Every header's value, as sent and base64-decoded where it is base64."""
    texts = []
    for _, value in record.headers:
        texts.append(value)
        with contextlib.suppress(binascii.Error):
            texts.append(base64.b64decode(value, validate=True))
    return texts


def _mixed_scheduling(registry: EventRegistry, event_id: UUID) -> tuple[CaseEvent, bytes]:
    """service.scheduled as v1 stored it: the kind sealed, the address (marked in v2) not."""
    event = _with_canary(ServiceScheduled, "location.address")
    document = json.loads(registry.seal(event, event_id, encode(event)))
    document["location"]["address"] = CANARY
    return event, json.dumps(document).encode()


@pytest.mark.parametrize(("model", "path"), NEWLY_SEALED, ids=lambda p: getattr(p, "__name__", p))
def test_a_stored_form_holding_a_newly_sealed_value_in_clear_travels_in_no_header(
    model: type[CaseEvent], path: str
) -> None:
    """The stored bytes went out base64 in ``ce_storeddata`` (a header: logged, copied onto
    dead letters), the clear value in them. Sent in structured mode instead, the event still
    decodes with its stored form and proves the same leaf, for a reader with keys or none."""
    registry = protected()
    event_id = uuid4()
    if model is ServiceScheduled:
        event, stored = _mixed_scheduling(registry, event_id)
    else:
        event = _with_canary(model, path)
        stored = encode(event)
    record = RecordedEvent.stored(
        stream=f"case-{event.subject}",
        sequence=1,
        position=1,
        event_type=model.event_type,
        subject=event.subject,
        schema_version=model.schema_version - 1,
        data=stored,
        registry=registry,
        envelope=_envelope(event_id),
    )
    kafka = to_kafka_binary(record)

    assert record.stored_in_clear
    assert not any(CANARY.encode() in text for text in _header_texts(kafka))
    assert dict(kafka.headers)["content-type"] == b"application/cloudevents+json"
    assert dict(kafka.headers)["ce_type"] == model.event_type.encode()
    for reader in (registry, build_registry()):
        decoded = from_kafka_binary(kafka.key, kafka.headers, kafka.value, reader)
        assert decoded.stored_form == record.stored_form
        assert canonical_of_record(decoded) == canonical_of_record(record)
        again = to_kafka_binary(decoded)  # forwarded by a reader (a replay, a dead letter)
        assert not any(CANARY.encode() in text for text in _header_texts(again))
    assert from_kafka_binary(kafka.key, kafka.headers, kafka.value, registry).event == event


def _consent(*categories: SensitiveCategory) -> ConsentGranted:
    example = _example(ConsentGranted)
    assert isinstance(example, ConsentGranted)
    return example.model_copy(update={"categories": categories})


def test_a_consents_categories_are_sealed_whole_and_opened_for_the_policy() -> None:
    event = _consent(SensitiveCategory.SUBSTANCE_USE, SensitiveCategory.MENTAL_HEALTH)
    registry = protected()
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event))
    assert b"substance_use" not in sealed
    assert b"mental_health" not in sealed
    assert json.loads(sealed)["categories"].startswith("ct1~")  # one value: not even a count
    record = _read(registry, event.event_type, event.schema_version, sealed, event_id)
    entry = entry_of(record)
    assert entry is not None
    facts = fold("case-0001", [entry])
    assert facts.consents[0].categories == {
        SensitiveCategory.SUBSTANCE_USE,
        SensitiveCategory.MENTAL_HEALTH,
    }
    assert "consent.granted.categories" in {
        f"consent.granted.{name}" for name in ConsentGranted.sensitive_fields()
    }


def test_once_erased_a_consent_names_no_category_and_covers_none() -> None:
    event = _consent(SensitiveCategory.SUBSTANCE_USE)
    registry = protected()
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event))
    assert registry.protection is not None
    keyring_of(registry).destroy(registry.protection.owner_of(event))
    for reader in (registry, build_registry()):
        record = _read(reader, event.event_type, event.schema_version, sealed, event_id)
        assert isinstance(record.event, ConsentGranted)
        assert record.event.categories == ()
        entry = entry_of(record)
        assert entry is not None
        assert entry["categories"] == []
        [consent] = fold("case-0001", [entry]).consents
        assert consent.categories == frozenset()  # still binds sections; no category covered


def test_a_v2_consent_stored_in_clear_keeps_its_categories_after_the_upcast() -> None:
    event = _consent(SensitiveCategory.HEALTH)
    registry = protected()
    record = _read(registry, event.event_type, 2, encode(event), uuid4())
    assert isinstance(record.event, ConsentGranted)
    assert record.event.categories == (SensitiveCategory.HEALTH,)
    assert record.event.recipient == event.recipient
    assert record.event.schema_version == ConsentGranted.schema_version


def test_every_field_typed_with_a_sensitive_category_is_marked() -> None:
    """No event carries a ``SensitiveCategory`` outside a sealed field."""
    for model in build_registry().types.values():
        schema = model.model_json_schema()
        for name, field in schema.get("properties", {}).items():
            if "SensitiveCategory" in json.dumps(field):
                assert name in model.sensitive_fields(), (model.event_type, name)


def test_coordination_reads_the_eligibility_reasons_opened_and_erased_with_the_key() -> None:
    """Coordination's case state (GetCaseCoordination, the eligibility decisions) decodes the
    stream with the keys: the reasons as written for the service, the marker once erased."""
    from services.coordination.domain.case import case_state

    event = _with_canary(EligibilityDetermined, "reasons[0]")
    assert isinstance(event, EligibilityDetermined)
    registry = protected()
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event))
    assert CANARY.encode() not in sealed
    record = _read(registry, event.event_type, event.schema_version, sealed, event_id)
    [decision] = case_state([record]).eligibility
    assert decision.reasons[0] == CANARY
    assert registry.protection is not None
    keyring_of(registry).destroy(registry.protection.owner_of(event))
    record = _read(registry, event.event_type, event.schema_version, sealed, event_id)
    [decision] = case_state([record]).eligibility
    assert decision.reasons == (ERASED_TEXT,) * len(event.reasons)


def test_the_eligibility_facts_are_sealed_one_by_one_and_read_absent_once_erased() -> None:
    # The client's age, income and household travel sealed; erased, each reads absent.
    event = _example(EligibilityDetermined)
    assert isinstance(event, EligibilityDetermined)
    facts = event.facts
    assert facts.age is not None
    assert facts.monthly_income is not None
    registry = protected()
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event))
    stored = json.loads(sealed)["facts"]
    assert all(str(value).startswith("ct1~") for value in stored.values() if value is not None)
    opened = registry.decode(event.event_type, event.schema_version, sealed, event_id)
    assert opened == event
    assert registry.protection is not None
    keyring_of(registry).destroy(registry.protection.owner_of(event))
    erased = registry.decode(event.event_type, event.schema_version, sealed, event_id)
    assert isinstance(erased, EligibilityDetermined)
    assert (erased.facts.age, erased.facts.monthly_income, erased.facts.household_size) == (
        None,
        None,
        None,
    )
