"""Sealing the catalog's sensitive fields: every example event round-trips, nothing sensitive
is left in the stored bytes, sealed values are bound to their event, field and client, and an
erased client's values read as the erasure marker while the rest of the event stays."""

from __future__ import annotations

import json
import re
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.keys.fields import UnreadableFieldError, sensitive_plan, sensitive_values
from casetrail_platform.keys.keyring import ClientErasedError
from casetrail_platform.keys.sqlite import SqliteDataKeyTable
from casetrail_platform.ledger.export import canonical_of_record
from casetrail_platform.store.rows import recorded_from_new
from events.catalog.base import CaseEvent
from events.catalog.examples import example_events
from events.cloudevents import from_kafka_binary, from_structured, to_kafka_binary, to_structured
from events.registry import encode
from events.sealed_values import ERASED_CODE, ERASED_TEXT
from tests.support.sample_events import WORKER
from tests.unit.keys.support import (
    SENSITIVE_EXAMPLES,
    FakeKms,
    MemoryDataKeyTable,
    keyring_of,
    protected,
)


def _leaves(value: object) -> list[str]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value] if isinstance(value, str) else []


def _sensitive_texts(event: CaseEvent) -> set[str]:
    """The sensitive strings of ``event`` (opened), for looking for them in sealed bytes."""
    return {
        value
        for value in sensitive_values(event).values()
        if isinstance(value, str) and len(value) > 3
    }


def test_every_event_type_with_sensitive_fields_has_an_example() -> None:
    assert len(SENSITIVE_EXAMPLES) >= 15


@pytest.mark.parametrize("event", SENSITIVE_EXAMPLES, ids=lambda e: e.event_type)
def test_sealed_data_holds_no_sensitive_text_and_opens_to_the_event(event: CaseEvent) -> None:
    registry = protected()
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event))
    for text in _sensitive_texts(event):
        assert json.dumps(text, ensure_ascii=False)[1:-1].encode() not in sealed, text
    assert registry.decode(event.event_type, event.schema_version, sealed, event_id) == event


def test_a_sealed_value_moved_to_another_event_does_not_open() -> None:
    registry = protected()
    event = SENSITIVE_EXAMPLES[0]
    sealed = registry.seal(event, uuid4(), encode(event))
    with pytest.raises(UnreadableFieldError) as raised:
        registry.decode(event.event_type, event.schema_version, sealed, uuid4())
    assert raised.value.problems[0].field in type(event).sensitive_fields() or "." in (
        raised.value.problems[0].field
    )


def test_a_sealed_value_moved_to_another_field_does_not_open() -> None:
    registry = protected()
    progress = next(e for e in SENSITIVE_EXAMPLES if e.event_type == "casetrail.progress.evaluated")
    event_id = uuid4()
    document = json.loads(registry.seal(progress, event_id, encode(progress)))
    document["helping_factors"], document["hindering_factors"] = (
        document["hindering_factors"],
        document["helping_factors"],
    )
    assert document["helping_factors"], "the example has factors of both kinds"
    with pytest.raises(UnreadableFieldError):
        registry.decode(
            progress.event_type, progress.schema_version, json.dumps(document), event_id
        )


def test_each_seal_draws_a_fresh_nonce() -> None:
    registry = protected()
    event = SENSITIVE_EXAMPLES[0]
    event_id = uuid4()
    assert registry.seal(event, event_id, encode(event)) != registry.seal(
        event, event_id, encode(event)
    )


def test_a_case_is_sealed_with_its_clients_key_once_the_case_opened() -> None:
    registry = protected()
    opened = next(e for e in SENSITIVE_EXAMPLES if e.event_type == "casetrail.case.opened")
    later = next(e for e in SENSITIVE_EXAMPLES if e.event_type == "casetrail.contact.logged")
    registry.seal(opened, uuid4(), encode(opened))
    sealed = registry.seal(later, uuid4(), encode(later)).decode()
    assert f"ct1~{opened.client_id}~1~" in sealed  # type: ignore[attr-defined]


def test_after_erasure_sensitive_values_read_as_erased_and_the_rest_remains() -> None:
    registry = protected()
    keyring = keyring_of(registry)
    opened = next(e for e in SENSITIVE_EXAMPLES if e.event_type == "casetrail.case.opened")
    client = opened.client_id  # type: ignore[attr-defined]
    stored = [(event, uuid4()) for event in SENSITIVE_EXAMPLES]
    sealed = [
        (event, event_id, registry.seal(event, event_id, encode(event)))
        for event, event_id in stored
    ]
    for owner in keyring.owners_of_client(client):
        keyring.destroy(owner)
    for event, event_id, data in sealed:
        erased = registry.decode(event.event_type, event.schema_version, data, event_id)
        document = json.loads(encode(erased))
        original = json.loads(encode(event))
        erased_values = sensitive_values(erased)
        # Text and codes read as their markers; a list sealed whole reads empty and a date or
        # an object sealed whole reads absent (personal data: the walk skips absent values).
        assert set(erased_values) <= set(sensitive_values(event))
        for path in sensitive_values(event):
            assert erased_values.get(path) in (ERASED_TEXT, ERASED_CODE, [], None), path
        plan = sensitive_plan(type(event))
        assert plan is not None
        for name in original:
            if name not in plan.fields:
                assert document[name] == original[name], name
    with pytest.raises(ClientErasedError):
        registry.seal(opened, uuid4(), encode(opened))


def test_keys_are_unwrapped_once_and_cached() -> None:
    kms = FakeKms()
    registry = protected(kms, MemoryDataKeyTable())
    event = SENSITIVE_EXAMPLES[0]
    for _ in range(5):
        event_id = uuid4()
        registry.decode(
            event.event_type,
            event.schema_version,
            registry.seal(event, event_id, encode(event)),
            event_id,
        )
    assert kms.unwraps == 1


def test_kafka_and_structured_forms_carry_ciphertext_and_keep_the_ledger_bytes() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4 as new_id

    from events.envelope import EventMetadata, NewEvent

    registry = protected()
    for event in SENSITIVE_EXAMPLES:
        new = NewEvent(
            event,
            EventMetadata("casetrail/test", WORKER, datetime.now(UTC), new_id(), new_id()),
        )
        data = registry.seal(event, new.event_id, encode(event))
        recorded = recorded_from_new(new, "case-x", 1, 7, datetime.now(UTC), data)
        record = to_kafka_binary(recorded)
        assert record.value == data
        for text in _sensitive_texts(event):
            assert text.encode() not in record.value
        received = from_kafka_binary(record.key, record.headers, record.value, registry)
        assert received.event == event
        assert canonical_of_record(received) == canonical_of_record(recorded)
        document = to_structured(received)
        assert json.dumps(document["data"], ensure_ascii=False).find("ct1~") > 0
        again = from_structured(json.loads(json.dumps(document, sort_keys=True)), registry)
        assert again.event == event
        assert canonical_of_record(again) == canonical_of_record(recorded)


def test_an_event_whose_sensitive_fields_are_empty_is_stored_as_its_own_json() -> None:
    """Nothing sealed, nothing re-encoded: a reader rebuilding the record (audit's timeline,
    from CloudEvents) hashes the same ledger bytes as the store (a sorted re-encoding did not)."""
    from datetime import UTC, datetime
    from uuid import uuid4 as new_id

    from events.catalog.cases import CaseClosed, DischargeReason
    from events.envelope import EventMetadata, NewEvent

    registry = protected()
    # Its only sensitive field, the note, is absent (a discharge's criteria are sealed).
    event = CaseClosed(case_id="case-x", reason=DischargeReason.GOALS_ACHIEVED)
    new = NewEvent(event, EventMetadata("casetrail/test", WORKER, datetime.now(UTC), new_id()))
    data = registry.seal(event, new.event_id, encode(event))
    assert data == encode(event)
    recorded = recorded_from_new(new, "case-x", 1, 7, datetime.now(UTC), data)
    again = from_structured(json.loads(json.dumps(to_structured(recorded))), registry)
    assert canonical_of_record(again) == canonical_of_record(recorded)


def test_an_event_without_sensitive_values_is_recorded_even_after_erasure() -> None:
    registry = protected()
    keyring = keyring_of(registry)
    opened = next(e for e in SENSITIVE_EXAMPLES if e.event_type == "casetrail.case.opened")
    registry.seal(opened, uuid4(), encode(opened))
    for owner in keyring.owners_of_client(opened.client_id):  # type: ignore[attr-defined]
        keyring.destroy(owner)
    closed = next(e for e in example_events() if e.event_type == "casetrail.case.closed")
    quiet = closed.model_copy(update={"note": None})

    assert registry.seal(quiet, uuid4(), encode(quiet)) == encode(quiet)


def test_a_sealed_value_relabelled_to_another_client_or_key_version_does_not_open() -> None:
    registry = protected()
    keyring = keyring_of(registry)
    event = next(e for e in SENSITIVE_EXAMPLES if e.event_type == "casetrail.client.registered")
    owner = event.client_id  # type: ignore[attr-defined]
    other = event.model_copy(update={"client_id": "client-other"})
    event_id = uuid4()  # the same for both: only the client differs
    mine = registry.seal(event, event_id, encode(event)).decode()
    theirs = registry.seal(other, event_id, encode(other)).decode()
    assert "ct1~client-other~1~" in theirs

    def opens(data: str) -> None:
        registry.decode(event.event_type, event.schema_version, data, event_id)

    opens(mine)
    # Another client's value named as this client's (opened with this client's key).
    with pytest.raises(UnreadableFieldError):
        opens(theirs.replace("ct1~client-other~", f"ct1~{owner}~"))
    # This client's value named as sealed by a newer version of their key.
    keyring._create(owner, 2)
    with pytest.raises(UnreadableFieldError):
        opens(mine.replace(f"ct1~{owner}~1~", f"ct1~{owner}~2~"))


@pytest.mark.parametrize(
    "relabel",
    [
        "~99999999999999999999~",  # past both tables' integers (SQLite raised OverflowError)
        "~3000000000~",  # past PostgreSQL's integer
        "~0~",
        "~-1~",
        "~01~",
    ],
)
def test_a_crafted_key_version_is_unreadable_and_never_asked_of_the_table(
    relabel: str, tmp_path: Path
) -> None:
    table = SqliteDataKeyTable(tmp_path / "keys.db")
    registry = protected(table=table)
    event = SENSITIVE_EXAMPLES[0]
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event)).decode()
    crafted = re.sub(r"~1~", relabel, sealed, count=1)
    with pytest.raises(UnreadableFieldError) as refused:
        registry.decode(event.event_type, event.schema_version, crafted, event_id)
    assert relabel.strip("~") not in str(refused.value)


def test_a_crafted_key_owner_is_unreadable_and_not_echoed() -> None:
    registry = protected()
    event = SENSITIVE_EXAMPLES[0]
    event_id = uuid4()
    sealed = registry.seal(event, event_id, encode(event)).decode()
    for owner in ("x" * 10_000, "a b", "ünï"):
        crafted = re.sub(r"ct1~[^~]+~", f"ct1~{owner}~", sealed, count=1)
        with pytest.raises(UnreadableFieldError) as refused:
            registry.decode(event.event_type, event.schema_version, crafted, event_id)
        assert owner not in str(refused.value)
