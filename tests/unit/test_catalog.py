"""The public event catalog: every type round-trips, bad data is refused precisely."""

from __future__ import annotations

import inspect
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from events.catalog.access import RecordAccessed
from events.catalog.assessment import InitialAssessmentRecorded
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened, PresentingNeed, ReferralSource, ReferralSourceKind
from events.catalog.clients import ClientRegistered
from events.catalog.emergency import EmergencyAccessOpened
from events.catalog.examples import example_events, legacy_example_events
from events.catalog.funding import ClaimDecision, InsuranceClaimDecided
from events.catalog.legacy import CaseOpenedV1, ClientRegisteredV1, RecordAccessedV3
from events.catalog.monitoring import ContactLogged, ProgressEvaluated
from events.catalog.referrals import ReferralMade
from events.catalog.scheduling import ServiceScheduled
from events.catalog.values import Money, NeedCategory
from events.catalog_registry import (
    all_event_types,
    build_registry,
    current_models,
    default_registry,
    legacy_models,
)
from events.errors import InvalidEventError, MissingUpcasterError, UnknownEventTypeError
from events.registry import EventRegistry, encode

EVENT_TYPE = re.compile(r"^casetrail\.[a-z][a-z_]*\.[a-z][a-z_]*$")
EXAMPLES = {event.event_type: event for event in example_events()}


def _example(model: type[CaseEvent]) -> CaseEvent:
    return EXAMPLES[model.event_type]


def _data(event: CaseEvent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(encode(event))
    return data


def _fields(error: InvalidEventError) -> set[str]:
    return {problem.field for problem in error.problems}


@pytest.fixture
def registry() -> EventRegistry:
    return build_registry()


# --- the catalog as a whole ---------------------------------------------------------------------


def test_registry_knows_every_current_model_and_nothing_else() -> None:
    types = [model.event_type for model in current_models()]
    assert len(types) == len(set(types)) == 42
    assert set(default_registry().types) == set(types) == set(all_event_types())
    assert list(all_event_types()) == sorted(types)


def test_default_registry_is_built_once() -> None:
    assert default_registry() is default_registry()
    assert build_registry() is not build_registry()


def test_every_type_has_one_example() -> None:
    assert sorted(EXAMPLES) == list(all_event_types())
    assert len(EXAMPLES) == len(example_events())
    for event in example_events():
        assert type(event) is default_registry().model_for(event.event_type)


@pytest.mark.parametrize("model", [*current_models(), *legacy_models()], ids=str)
def test_event_types_are_stable_public_names(model: type[CaseEvent]) -> None:
    assert EVENT_TYPE.match(model.event_type), model.event_type
    assert not model.event_type.startswith(model.__module__.split(".")[0])
    assert model.schema_version >= 1
    assert model.subject_field in model.model_fields
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("model", [*current_models(), *legacy_models()], ids=str)
def test_every_event_says_what_happened(model: type[CaseEvent]) -> None:
    docstring = model.__dict__.get("__doc__")
    assert docstring, f"{model.__name__} needs a docstring: it is its schema description"
    assert model.model_json_schema()["description"] == inspect.cleandoc(docstring)


def test_legacy_models_are_older_versions_of_current_types() -> None:
    current = {model.event_type: model.schema_version for model in current_models()}
    for model in legacy_models():
        assert model.schema_version < current[model.event_type]
    assert {(event.event_type, event.schema_version) for event in legacy_example_events()} == {
        (model.event_type, model.schema_version) for model in legacy_models()
    }


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("event", example_events(), ids=lambda event: event.event_type)
def test_every_event_round_trips_through_the_registry(
    event: CaseEvent, registry: EventRegistry
) -> None:
    stored = encode(event)
    decoded = registry.decode(event.event_type, event.schema_version, stored)
    assert decoded == event
    assert type(decoded) is type(event)
    assert encode(decoded) == stored
    assert registry.validate(event.event_type, event.schema_version, _data(event)) == event
    assert hash(decoded) == hash(event)


@pytest.mark.parametrize("event", example_events(), ids=lambda event: event.event_type)
def test_events_are_immutable(event: CaseEvent) -> None:
    field = event.subject_field
    with pytest.raises(ValidationError, match="frozen"):
        setattr(event, field, "other")


def test_subject_is_the_case_id_except_for_client_events() -> None:
    client = EXAMPLES[ClientRegistered.event_type]
    assert isinstance(client, ClientRegistered)
    assert client.subject == client.client_id
    opened = EXAMPLES[CaseOpened.event_type]
    assert isinstance(opened, CaseOpened)
    assert opened.subject == opened.case_id


# --- refusals -----------------------------------------------------------------------------------


def test_unknown_type_is_refused(registry: EventRegistry) -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        registry.decode("casetrail.case.teleported", 1, b"{}")
    assert caught.value.event_type == "casetrail.case.teleported"
    assert _fields(caught.value) == {"type"}


def test_module_paths_are_not_event_types(registry: EventRegistry) -> None:
    with pytest.raises(UnknownEventTypeError):
        registry.model_for("events.catalog.cases.CaseOpened")


@pytest.mark.parametrize("event", example_events(), ids=lambda event: event.event_type)
def test_missing_subject_is_refused_naming_type_and_field(
    event: CaseEvent, registry: EventRegistry
) -> None:
    data = _data(event)
    del data[event.subject_field]
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(event.event_type, event.schema_version, data)
    assert caught.value.event_type == event.event_type
    assert event.subject_field in _fields(caught.value)
    assert event.event_type in str(caught.value)
    assert event.subject_field in str(caught.value)


@pytest.mark.parametrize("event", example_events(), ids=lambda event: event.event_type)
def test_extra_field_is_refused(event: CaseEvent, registry: EventRegistry) -> None:
    data = _data(event) | {"favourite_colour": "blue"}
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(event.event_type, event.schema_version, data)
    assert _fields(caught.value) == {"favourite_colour"}


def test_wrong_type_is_refused_naming_the_nested_field(registry: EventRegistry) -> None:
    data = _data(_example(CaseOpened))
    data["presenting_needs"][0]["category"] = "flying"
    data["client_id"] = 42
    with pytest.raises(InvalidEventError) as caught:
        registry.decode(CaseOpened.event_type, CaseOpened.schema_version, json.dumps(data))
    assert _fields(caught.value) == {"presenting_needs.0.category", "client_id"}


def test_a_time_box_at_the_end_of_the_calendar_is_refused_not_a_crash(
    registry: EventRegistry,
) -> None:
    """Moments a schema's date-time allows, 24 hours of which do not fit in a datetime: a
    decoder of untrusted data (``casetrail verify``, a consumer) is told what is wrong."""
    data = _data(_example(EmergencyAccessOpened))
    data["opened_at"] = "9999-12-31T23:00:00Z"
    data["expires_at"] = "9999-12-31T23:30:00Z"
    opened = registry.validate(EmergencyAccessOpened.event_type, 1, data)
    assert isinstance(opened, EmergencyAccessOpened)
    assert opened.expires_at.year == 9999
    data["expires_at"] = "9999-12-31T22:30:00Z"
    with pytest.raises(InvalidEventError, match="expires_at must be after opened_at"):
        registry.validate(EmergencyAccessOpened.event_type, 1, data)


def test_refused_data_is_told_in_plain_words_naming_fields_never_values(
    registry: EventRegistry,
) -> None:
    """As the services' refusals say it (``events.validation.reported``): no "at least 1 item"
    for a list whose only item was refused, no "Input should be", a blank text "required"."""
    data = _data(_example(CaseOpened))
    data["presenting_needs"] = [{"category": "flying-carpets", "description": ""}]
    data["client_id"] = None
    with pytest.raises(InvalidEventError) as caught:
        registry.decode(CaseOpened.event_type, CaseOpened.schema_version, json.dumps(data))
    said = {problem.field: problem.problem for problem in caught.value.problems}
    assert set(said) == {
        "client_id",
        "presenting_needs.0.category",
        "presenting_needs.0.description",
    }
    assert said["client_id"].startswith("required, 1-")
    assert said["presenting_needs.0.category"].startswith("must be 'housing', ")
    assert "'erased'" not in said["presenting_needs.0.category"]  # a marker, refused stored
    assert said["presenting_needs.0.description"].startswith("required")
    assert "flying-carpets" not in str(caught.value)
    assert "should" not in str(caught.value)


def test_refused_superseded_data_is_told_in_plain_words_with_its_version(
    registry: EventRegistry,
) -> None:
    data = _data(legacy_example_events()[0]) | {"presenting_need": "   "}
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(CaseOpened.event_type, 1, data)
    [problem] = caught.value.problems
    assert (problem.field, problem.problem.split(",")[0]) == ("presenting_need", "required")
    assert problem.problem.endswith(" (schema version 1)")


def test_blank_and_malformed_identifiers_are_refused(registry: EventRegistry) -> None:
    data = _data(_example(CaseAssigned)) | {"case_id": "   ", "worker_id": "has space"}
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(CaseAssigned.event_type, CaseAssigned.schema_version, data)
    assert _fields(caught.value) == {"case_id", "worker_id"}


def test_unknown_version_is_refused(registry: EventRegistry) -> None:
    data = _data(_example(CaseOpened))
    for version in (0, CaseOpened.schema_version + 1):
        with pytest.raises(InvalidEventError) as caught:
            registry.validate(CaseOpened.event_type, version, data)
        assert _fields(caught.value) == {"schema_version"}


def test_old_version_without_upcaster_is_refused() -> None:
    bare = EventRegistry(current_models())
    v1 = legacy_example_events()[0]
    with pytest.raises(MissingUpcasterError) as caught:
        bare.decode(v1.event_type, 1, encode(v1))
    assert caught.value.event_type == "casetrail.case.opened"
    assert _fields(caught.value) == {"schema_version"}
    assert f"no upcaster from version 1 to {CaseOpened.schema_version}" in str(caught.value)


# --- upcasting ----------------------------------------------------------------------------------


def test_case_opened_v1_is_upcast_to_the_current_version(registry: EventRegistry) -> None:
    v1 = CaseOpenedV1(
        case_id="case-1",
        client_id="client-1",
        referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
        presenting_need="Evicted next month",
    )
    decoded = registry.decode(CaseOpened.event_type, 1, encode(v1))
    assert decoded == CaseOpened(
        case_id="case-1",
        client_id="client-1",
        referral_source=ReferralSource(kind=ReferralSourceKind.SELF),
        presenting_needs=(
            PresentingNeed(category=NeedCategory.OTHER, description="Evicted next month"),
        ),
    )


def test_client_registered_v1_is_upcast_to_v2_confirming_no_one(
    registry: EventRegistry,
) -> None:
    v1 = next(e for e in legacy_example_events() if isinstance(e, ClientRegisteredV1))
    decoded = registry.decode(ClientRegistered.event_type, 1, encode(v1))
    assert isinstance(decoded, ClientRegistered)
    assert decoded.confirmed_not_duplicate_of == ()
    assert decoded.model_dump(exclude={"confirmed_not_duplicate_of"}) == v1.model_dump()
    data = _data(v1)
    del data["name"]
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(ClientRegistered.event_type, 1, data)
    assert _fields(caught.value) == {"name"}
    assert "schema version 1" in str(caught.value)


def test_a_v3_access_record_is_upcast_naming_the_one_consent_it_kept(
    registry: EventRegistry,
) -> None:
    """v3 named one consent (the first of a partner's referrals' own); v4 names every one."""
    v3 = next(e for e in legacy_example_events() if isinstance(e, RecordAccessedV3))
    for consent_id, consent_ids in ((None, ()), ("consent-5", ("consent-5",))):
        stored = v3.model_copy(update={"consent_id": consent_id})
        decoded = registry.decode(RecordAccessed.event_type, 3, encode(stored))
        assert isinstance(decoded, RecordAccessed)
        assert decoded.consent_ids == consent_ids
        assert decoded.model_dump(exclude={"consent_ids"}) == stored.model_dump(
            exclude={"consent_id"}
        )
    twice = _data(_example(RecordAccessed)) | {"consent_ids": ["consent-5", "consent-5"]}
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(RecordAccessed.event_type, 4, twice)
    assert _fields(caught.value) == {"consent_ids"}


def test_a_registration_confirms_each_other_client_once() -> None:
    data = _data(_example(ClientRegistered)) | {"confirmed_not_duplicate_of": ["c-1", "c-1"]}
    with pytest.raises(InvalidEventError) as caught:
        default_registry().validate(ClientRegistered.event_type, 2, data)
    assert _fields(caught.value) == {"confirmed_not_duplicate_of"}


def test_bad_v1_data_is_refused_naming_the_v1_field(registry: EventRegistry) -> None:
    data = _data(legacy_example_events()[0])
    del data["presenting_need"]
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(CaseOpened.event_type, 1, data)
    assert caught.value.event_type == CaseOpened.event_type
    assert _fields(caught.value) == {"presenting_need"}
    assert "schema version 1" in str(caught.value)


def test_v2_data_stored_as_v1_is_refused(registry: EventRegistry) -> None:
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(CaseOpened.event_type, 1, _data(_example(CaseOpened)))
    assert _fields(caught.value) == {"presenting_need", "presenting_needs"}


# --- sensitivity --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "sensitive"),
    [
        (InitialAssessmentRecorded, {"factors", "risks", "needs"}),
        (ContactLogged, {"summary"}),
        (ProgressEvaluated, {"goal_progress", "helping_factors", "hindering_factors"}),
        (CaseOpened, {"presenting_needs"}),
        (CaseOpenedV1, {"presenting_need"}),
        (ClientRegistered, set()),
        (RecordAccessed, set()),
        (CaseAssigned, {"matched_needs"}),
        (ServiceScheduled, {"kind"}),
        (ReferralMade, {"need_category", "service", "reason"}),
    ],
    ids=lambda value: getattr(value, "event_type", ""),
)
def test_sensitive_fields_are_reported(model: type[CaseEvent], sensitive: set[str]) -> None:
    assert model.sensitive_fields() == sensitive


def test_every_assessment_factor_about_health_or_psyche_is_sensitive() -> None:
    properties = InitialAssessmentRecorded.model_json_schema()["$defs"]["AssessmentFactors"][
        "properties"
    ]
    for name in ("psychosocial", "biological", "psychological", "cultural"):
        assert properties[name]["anyOf"][0]["x-casetrail-sensitive"] is True
    # Social and economic findings are the client's private life, not special-category data:
    # personal (v2), disclosed by the ordinary rules, erased with the client's key.
    for name in ("social", "economic"):
        assert "x-casetrail-sensitive" not in json.dumps(properties[name])
        assert properties[name]["anyOf"][0]["x-casetrail-personal"] is True


# --- domain rules -------------------------------------------------------------------------------


def _scheduled(**changes: Any) -> dict[str, Any]:
    return _data(_example(ServiceScheduled)) | changes


def test_service_must_end_after_it_starts(registry: EventRegistry) -> None:
    start = datetime(2024, 3, 5, 10, tzinfo=UTC)
    for end in (start, start - timedelta(minutes=1)):
        data = _scheduled(starts_at=start.isoformat(), ends_at=end.isoformat())
        with pytest.raises(InvalidEventError) as caught:
            registry.validate(ServiceScheduled.event_type, 1, data)
        assert _fields(caught.value) == {"ends_at"}
        assert "ends_at must be after starts_at" in str(caught.value)


def test_end_is_compared_as_an_instant_across_offsets(registry: EventRegistry) -> None:
    data = _scheduled(starts_at="2024-03-05T10:00:00+01:00", ends_at="2024-03-05T09:30:00Z")
    event = registry.validate(ServiceScheduled.event_type, 1, data)
    assert isinstance(event, ServiceScheduled)
    assert event.ends_at - event.starts_at == timedelta(minutes=30)


def test_naive_datetimes_are_refused(registry: EventRegistry) -> None:
    data = _scheduled(starts_at="2024-03-05T10:00:00", ends_at="2024-03-05T11:00:00")
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(ServiceScheduled.event_type, 1, data)
    assert _fields(caught.value) == {"starts_at", "ends_at"}
    assert "must have a UTC offset" in str(caught.value)


def test_negative_amounts_and_bad_currencies_are_refused(registry: EventRegistry) -> None:
    data = _data(_example(InsuranceClaimDecided))
    data["amount_approved"] = {"amount_minor_units": -1, "currency": "euro"}
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(InsuranceClaimDecided.event_type, 1, data)
    assert _fields(caught.value) == {
        "amount_approved.amount_minor_units",
        "amount_approved.currency",
    }


@pytest.mark.parametrize(
    ("decision", "amount", "reason", "rule"),
    [
        (ClaimDecision.DENIED, 100, "Not covered", "must be zero when the decision is denied"),
        (ClaimDecision.APPROVED, 0, None, "must be above zero when the decision is approved"),
        (ClaimDecision.PARTIAL, 100, None, "reason is required when the decision is partial"),
        (ClaimDecision.DENIED, 0, None, "reason is required when the decision is denied"),
    ],
)
def test_claim_decisions_are_consistent(
    decision: ClaimDecision, amount: int, reason: str | None, rule: str
) -> None:
    with pytest.raises(ValidationError, match=rule):
        InsuranceClaimDecided(
            case_id="case-1",
            claim_id="claim-1",
            insurer_id="ins-1",
            decision=decision,
            amount_approved=Money(amount_minor_units=amount, currency="EUR"),
            reason=reason,
        )


def test_only_case_carrying_roles_can_be_assigned(registry: EventRegistry) -> None:
    data = _data(_example(CaseAssigned)) | {"worker_role": Role.COORDINATOR.value}
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(CaseAssigned.event_type, CaseAssigned.schema_version, data)
    assert _fields(caught.value) == {"worker_role"}
    assert "worker_role must be a role that carries cases" in str(caught.value)


def test_reassignment_must_change_the_worker(registry: EventRegistry) -> None:
    data = _data(_example(CaseReassigned))
    data["worker_id"] = data["previous_worker_id"]
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(CaseReassigned.event_type, CaseReassigned.schema_version, data)
    assert _fields(caught.value) == {"worker_id"}


def test_repeated_goal_progress_is_refused(registry: EventRegistry) -> None:
    data = _data(_example(ProgressEvaluated))
    data["goal_progress"] = [data["goal_progress"][0], data["goal_progress"][0]]
    with pytest.raises(InvalidEventError) as caught:
        registry.validate(ProgressEvaluated.event_type, 1, data)
    assert _fields(caught.value) == {"goal_progress"}
    # Positions, never the value: the message reaches dead letters and logs.
    assert "goal-mobility" not in str(caught.value)
    assert "entries 0 and 1 repeat" in str(caught.value)


def test_need_categories_are_the_agreed_list() -> None:
    assert [category.value for category in NeedCategory] == [
        "housing",
        "food",
        "income",
        "health",
        "mental_health",
        "substance_use",
        "disability",
        "family_care",
        "counseling",
        "physical_therapy",
        "home_care",
        "transportation",
        "socialisation",
        "legal",
        "education",
        "employment",
        "other",
        "erased",  # only read back from an erased client's history (casetrail_platform.keys.fields)
    ]
