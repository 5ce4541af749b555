"""Events stored under an older schema version carry their stored form over the bus and into
exports (the ``storedversion``/``storeddata`` CloudEvents extensions), so that the ledger leaf,
which hashes the stored bytes, can be recomputed from what a subscriber received: present only
when the stored form differs from ``data``, checked by the decoders (a stored form that does
not upcast to ``data`` is undecodable, so a dead letter), never holding a sealed value in
clear, and still proving the event after the client's key is destroyed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from jsonschema import Draft202012Validator

from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.keys.fields import FieldProtection, sensitive_plan, sensitive_values
from casetrail_platform.ledger.canonical import canonical_row, parse_canonical
from casetrail_platform.ledger.export import canonical_of_record
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseOpened
from events.catalog.examples import example_events, legacy_example_events
from events.catalog.legacy import CaseOpenedV1
from events.catalog_registry import build_registry
from events.cloudevents import (
    KAFKA_CONTENT_TYPE_HEADER,
    KAFKA_HEADER_PREFIX,
    STRUCTURED_CONTENT_TYPE,
    KafkaRecord,
    UndecodableMessageError,
    context_attributes,
    envelope_json_schema,
    from_json_lines,
    from_kafka_binary,
    from_structured,
    to_kafka_binary,
    to_structured,
)
from events.dead_letters import DeadLetterReason
from events.envelope import RecordedEvent, StoredEnvelope, StoredForm, to_micros
from events.registry import EventRegistry, encode
from events.schema_export import DEFAULT_DIRECTORY, schema_path
from events.sealed_values import ERASED_FORMS
from tests.contract.bus_conftest import Recorder, eventually, running
from tests.unit.keys.support import keyring_of, protected

STORED = "ce_storeddata"
VERSION = "ce_storedversion"
OCCURRED = datetime(2024, 3, 4, 17, 30, 0, 7, tzinfo=UTC)
RECORDED = datetime(2024, 3, 5, 9, 0, 1, 250_000, tzinfo=UTC)


def _envelope(event_id: UUID) -> StoredEnvelope:
    return StoredEnvelope(
        event_id=str(event_id),
        source="intake",
        actor_id="worker-ana",
        actor_role=Role.SOCIAL_WORKER.value,
        correlation_id=str(UUID(int=7)),
        causation_id=None,
        occurred_at=to_micros(OCCURRED),
        recorded_at=to_micros(RECORDED),
    )


def _stored(
    event: CaseEvent, registry: EventRegistry, event_id: UUID | None = None
) -> tuple[RecordedEvent, bytes]:
    """A record as a store reads it back (sealed as the store seals), and its leaf's bytes."""
    event_id = event_id or uuid4()
    data = registry.seal(event, event_id, encode(event))
    envelope = _envelope(event_id)
    record = RecordedEvent.stored(
        stream=f"case-{event.subject}",
        sequence=3,
        position=42,
        event_type=event.event_type,
        subject=event.subject,
        schema_version=event.schema_version,
        data=data,
        registry=registry,
        envelope=envelope,
    )
    row = (
        42,
        envelope.event_id,
        record.stream,
        3,
        event.event_type,
        event.schema_version,
        data,
        envelope.source,
        envelope.actor_id,
        envelope.actor_role,
        envelope.correlation_id,
        None,
        envelope.occurred_at,
        envelope.recorded_at,
        event.subject,
    )
    return record, canonical_row(row)


def canonical_row_data(leaf: bytes) -> bytes:
    """The data field of canonical bytes (the last netstring)."""
    return parse_canonical(leaf)[-1]


def _header(record: KafkaRecord, name: str) -> bytes | None:
    return next((value for key, value in record.headers if key == name), None)


def _with_header(record: KafkaRecord, name: str, value: bytes | None) -> KafkaRecord:
    headers = [(key, old) for key, old in record.headers if key != name]
    if value is not None:
        headers.append((name, value))
    return KafkaRecord(record.key, headers, record.value)


def _decode(record: KafkaRecord, registry: EventRegistry) -> RecordedEvent:
    return from_kafka_binary(record.key, record.headers, record.value, registry)


@pytest.mark.parametrize("event", example_events(), ids=lambda e: e.event_type)
def test_an_event_stored_at_the_current_version_carries_no_stored_form(event: CaseEvent) -> None:
    record, leaf = _stored(event, protected())
    assert record.stored_form is None
    assert _header(to_kafka_binary(record), STORED) is None
    assert _header(to_kafka_binary(record), VERSION) is None
    assert "storeddata" not in to_structured(record)
    assert canonical_of_record(record) == leaf


@pytest.mark.parametrize("event", legacy_example_events(), ids=lambda e: f"{e.event_type}-v1")
def test_an_upcast_event_carries_its_stored_bytes_and_proves_them_after_decoding(
    event: CaseEvent,
) -> None:
    writer = protected()
    record, leaf = _stored(event, writer)
    assert record.schema_version > event.schema_version
    form = record.stored_form
    assert form is not None
    assert form.schema_version == event.schema_version
    assert canonical_row_data(leaf) == form.data
    assert canonical_of_record(record) == leaf

    kafka = to_kafka_binary(record)
    if record.stored_in_clear:  # in structured mode (``test_a_stored_form_in_clear_...``)
        assert json.loads(kafka.value)["storeddata"] == base64.b64encode(form.data).decode()
    else:
        assert _header(kafka, VERSION) == str(event.schema_version).encode()
        assert base64.b64decode(_header(kafka, STORED) or b"") == form.data
    structured = to_structured(record)
    assert structured["storedversion"] == event.schema_version
    assert base64.b64decode(structured["storeddata"]) == form.data
    assert list(context_attributes(record))[-2:] == ["storedversion", "storeddata"]

    # A subscriber holding the keys, one holding none, and the offline verifier (a JSON line).
    for reader in (writer, build_registry()):
        decoded = _decode(kafka, reader)
        assert decoded.stored_form == form
        assert canonical_of_record(decoded) == leaf
        line = json.loads(json.dumps(to_structured(decoded)))
        again = from_structured(line, reader)
        assert again.stored_form == form
        assert canonical_of_record(again) == leaf
    assert _decode(kafka, writer).event == record.event


@pytest.mark.parametrize("event", legacy_example_events(), ids=lambda e: f"{e.event_type}-v1")
def test_after_the_key_is_destroyed_the_upcast_event_still_decodes_and_proves(
    event: CaseEvent,
) -> None:
    writer = protected()
    record, leaf = _stored(event, writer)
    published = _decode(to_kafka_binary(record), writer)
    line = json.dumps(to_structured(published))  # as audit keeps it
    keyring = keyring_of(writer)
    assert writer.protection is not None
    owner = writer.protection.owner_of(event)
    keyring.destroy(owner)
    keyring.forget(owner)

    sealed = b"ct1~" in record._data if record._data else False
    for reader in (writer, build_registry()):
        again = from_structured(json.loads(line), reader)
        assert canonical_of_record(again) == leaf
        if sealed:  # what the key sealed now reads as erased
            assert any(v in ERASED_FORMS for v in sensitive_values(again.event).values())


@pytest.mark.parametrize("event", legacy_example_events(), ids=lambda e: f"{e.event_type}-v1")
def test_after_the_key_is_destroyed_the_upcast_event_is_still_published_and_proven(
    event: CaseEvent,
) -> None:
    writer = protected()
    record, leaf = _stored(event, writer)
    assert writer.protection is not None
    sealed = b"ct1~" in (record.stored_form.data if record.stored_form else b"")
    keyring_of(writer).destroy(writer.protection.owner_of(event))
    # Read from the store again (a relay replaying from the start): it cannot seal again.
    again = RecordedEvent.stored(
        stream=record.stream,
        sequence=record.sequence,
        position=record.position,
        event_type=record.event_type,
        subject=record.subject,
        schema_version=event.schema_version,
        data=record.stored_form.data if record.stored_form else b"",
        registry=writer,
        envelope=_envelope(record.event_id),
    )

    kafka = to_kafka_binary(again)
    assert b"ct1~" not in kafka.value
    if sealed:
        assert any(v in ERASED_FORMS for v in sensitive_values(again.event).values())
    assert to_structured(again)["storeddata"] == to_structured(record)["storeddata"]
    for reader in (writer, build_registry()):
        decoded = _decode(kafka, reader)
        assert canonical_of_record(decoded) == leaf


def _sealed_current(event: CaseEvent) -> bool:
    """Whether the current version of ``event``'s type seals a leaf."""
    return sensitive_plan(build_registry().model_for(event.event_type)) is not None


@pytest.mark.parametrize("in_clear", [False, True], ids=["stored-sealed", "stored-in-clear"])
@pytest.mark.parametrize(
    "event",
    [event for event in legacy_example_events() if _sealed_current(event)],
    ids=lambda e: f"{e.event_type}-v1",
)
def test_once_erased_an_upcast_event_is_published_as_its_earlier_publication_reads(
    event: CaseEvent, in_clear: bool
) -> None:
    """A subscriber rebuilt from zero after the erasure (the in-process bus republishes the
    store at each start) is told what one that kept the publication made before it reads: the
    marker at every leaf the current version seals, on both buses. It was told what a reader
    holding no key decodes from the stored form: an upcaster's default (a v1 need's category
    ``other``, never recorded) and, stored in clear by a release before sealing, the erased
    client's name, date of birth, identifiers and need in clear."""
    writer = protected()
    event_id = uuid4()
    if in_clear:  # stored before sealing existed: the ledger hashed these very bytes
        record, leaf = _stored(event, build_registry(), event_id)
        record = _read_again(record, record.stored_form, writer)
    else:
        record, leaf = _stored(event, writer, event_id)
    kept = to_kafka_binary(record)  # published while the client was known: sealed
    assert writer.protection is not None
    keyring_of(writer).destroy(writer.protection.owner_of(event))
    republished = _read_again(record, record.stored_form, writer)

    data = json.loads(republished.data)
    schema = json.loads((DEFAULT_DIRECTORY / schema_path(type(republished.event))).read_text())
    assert list(Draft202012Validator(schema).iter_errors(data)) == []
    # Neither what the service read at those leaves (a value stored in clear, an upcaster's
    # default) nor anything but their markers.
    told = sensitive_values(record.event)
    assert set(_scalars(told)).isdisjoint(_scalars(data))
    for reader in (writer, build_registry()):
        earlier = _decode(kept, reader)
        received = _decode(to_kafka_binary(republished), reader)
        assert received.event == earlier.event
        assert all(v in ERASED_FORMS for v in sensitive_values(received.event).values())
        for published in (republished, received):
            assert to_structured(published)["data"] == data  # what audit keeps, either bus
            assert canonical_of_record(published) == leaf  # the proof still verifies


def _scalars(value: object) -> Iterator[object]:
    """The texts and numbers of parsed JSON, markers left out."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif value not in ERASED_FORMS and not isinstance(value, bool):
        yield value


def _read_again(
    record: RecordedEvent, form: StoredForm | None, registry: EventRegistry
) -> RecordedEvent:
    """``record`` read from its store again, by a relay decoding with ``registry``."""
    assert form is not None
    return RecordedEvent.stored(
        stream=record.stream,
        sequence=record.sequence,
        position=record.position,
        event_type=record.event_type,
        subject=record.subject,
        schema_version=form.schema_version,
        data=form.data,
        registry=registry,
        envelope=_envelope(record.event_id),
    )


def _received_erased(record: RecordedEvent, reader: EventRegistry, path: str) -> RecordedEvent:
    """``record`` decoded by ``reader`` as it came on ``path`` with the data an erasure
    publishes (``FieldProtection.erased``: the marker at every sealed leaf), whether or not
    its client was erased; its stored form, which the ledger's proof hashes, as it is."""
    erased = json.loads(encode(FieldProtection.erased(record.event)))
    return _received_with(record, reader, path, erased)


def _received_with(
    record: RecordedEvent, reader: EventRegistry, path: str, data: dict[str, object]
) -> RecordedEvent:
    """``record`` decoded by ``reader`` as it came on ``path`` with ``data`` in place of its
    own; its stored form as it is."""
    if path == "json-lines":
        [decoded] = from_json_lines(json.dumps(to_structured(record) | {"data": data}), reader)
        return decoded
    kafka = to_kafka_binary(record)
    value: object = data
    if _header(kafka, KAFKA_CONTENT_TYPE_HEADER) == STRUCTURED_CONTENT_TYPE.encode():
        value = json.loads(kafka.value) | {"data": data}  # a stored form holding clear values
    return _decode(KafkaRecord(kafka.key, kafka.headers, json.dumps(value).encode()), reader)


@pytest.mark.parametrize("path", ["kafka", "json-lines"])
@pytest.mark.parametrize("in_clear", [False, True], ids=["stored-sealed", "stored-in-clear"])
@pytest.mark.parametrize(
    "event",
    [event for event in legacy_example_events() if _sealed_current(event)],
    ids=lambda e: f"{e.event_type}-v1",
)
def test_markers_in_place_of_values_a_reader_holding_the_live_key_reads_are_refused(
    event: CaseEvent, in_clear: bool, path: str
) -> None:
    """Data holding the erasure markers against a stored form that upcasts to other values is
    what an erasure publishes only when the key is destroyed: a reader holding the client's
    live key refuses it as any data its stored form does not upcast to (on Kafka, a dead
    letter). It was taken as published erased: a record altered on the way was delivered, or
    a JSON-lines export verified, as if the client were erased, the proof (which hashes the
    stored form) still passing. A reader holding no keys cannot tell, and reads the markers:
    it reads every sealed value as one, and the stored form still holds what was stored."""
    writer = protected()
    event_id = uuid4()
    if in_clear:  # stored before sealing existed, read by a release holding the key
        record, leaf = _stored(event, build_registry(), event_id)
        record = _read_again(record, record.stored_form, writer)
    else:
        record, leaf = _stored(event, writer, event_id)

    with pytest.raises(UndecodableMessageError) as refused:
        _received_erased(record, writer, path)
    [problem] = refused.value.problems
    assert problem.field.endswith(STORED.removeprefix(KAFKA_HEADER_PREFIX))
    assert problem.problem.startswith(
        "does not upcast to the event's data (first difference at data."
    )

    withheld = _received_erased(record, build_registry(), path)
    assert all(v in ERASED_FORMS for v in sensitive_values(withheld.event).values())
    assert canonical_of_record(withheld) == leaf

    # Destroyed by another process: the key table is asked, not this keyring's cache, which
    # still holds the key live until the erasure's event arrives.
    assert writer.protection is not None
    keyring_of(writer).table.destroy(writer.protection.owner_of(event))
    erased = _received_erased(record, writer, path)
    assert all(v in ERASED_FORMS for v in sensitive_values(erased.event).values())
    assert canonical_of_record(erased) == leaf


def _sealed_under(value: object, owner: str) -> object:
    """``value`` (parsed JSON) with every sealed value in it naming ``owner``'s key instead."""
    if isinstance(value, dict):
        return {name: _sealed_under(item, owner) for name, item in value.items()}
    if isinstance(value, list):
        return [_sealed_under(item, owner) for item in value]
    if isinstance(value, str) and value.startswith("ct1~"):
        return f"ct1~{owner}~1~{'A' * 40}"
    return value


@pytest.mark.parametrize("path", ["kafka", "json-lines"])
@pytest.mark.parametrize("in_clear", [False, True], ids=["stored-sealed", "stored-in-clear"])
@pytest.mark.parametrize(
    "event",
    [event for event in legacy_example_events() if _sealed_current(event)],
    ids=lambda e: f"{e.event_type}-v1",
)
def test_values_sealed_under_another_clients_destroyed_key_are_refused_by_the_live_keys_reader(
    event: CaseEvent, in_clear: bool, path: str
) -> None:
    """A sealed value naming another client's destroyed key opens as the erasure marker,
    unchecked (no key is left to check it with), and a value sealed in ``data`` that a reader
    could not open went uncompared with the stored form whatever the key: data so altered on
    the way read erased to a reader holding the client's live key, delivered (the proof, which
    hashes the stored form, still passing) where the markers themselves are refused. Such a
    value is compared, as any, unless the reader takes the client as erased."""
    writer = protected()
    event_id = uuid4()
    if in_clear:
        record, leaf = _stored(event, build_registry(), event_id)
        record = _read_again(record, record.stored_form, writer)
    else:
        record, leaf = _stored(event, writer, event_id)
    assert writer.protection is not None
    keyring = keyring_of(writer)
    keyring.encryption_key("client-gone")
    keyring.destroy("client-gone")  # another client, erased
    forged = _sealed_under(to_structured(record)["data"], "client-gone")
    assert isinstance(forged, dict)

    with pytest.raises(UndecodableMessageError) as refused:
        _received_with(record, writer, path, forged)
    [problem] = refused.value.problems
    assert problem.field.endswith(STORED.removeprefix(KAFKA_HEADER_PREFIX))
    assert problem.problem.startswith(
        "does not upcast to the event's data (first difference at data."
    )

    # Once the client's own key is destroyed every sealed value reads erased, as published.
    keyring.table.destroy(writer.protection.owner_of(event))
    erased = _received_with(record, writer, path, forged)
    assert all(v in ERASED_FORMS for v in sensitive_values(erased.event).values())
    assert canonical_of_record(erased) == leaf


@pytest.mark.parametrize("event", legacy_example_events(), ids=lambda e: f"{e.event_type}-v1")
def test_the_stored_form_holds_no_sensitive_value_that_data_holds_sealed(
    event: CaseEvent,
) -> None:
    writer = protected()
    record, _ = _stored(event, writer)
    kafka = to_kafka_binary(record)
    stored_bytes = base64.b64decode(_header(kafka, STORED) or b"")
    upcast = _decode(kafka, writer).event
    hidden = [
        value
        for value in sensitive_values(upcast).values()
        if isinstance(value, str) and len(value) > 5 and value.encode() not in kafka.value
    ]
    for value in hidden:
        assert value.encode() not in stored_bytes, value


def _legacy_opening() -> tuple[RecordedEvent, KafkaRecord, EventRegistry]:
    writer = protected()
    [opened] = [e for e in legacy_example_events() if isinstance(e, CaseOpenedV1)]
    record, _ = _stored(opened, writer)
    return record, to_kafka_binary(record), writer


def test_a_stored_form_that_does_not_upcast_to_data_is_refused_naming_it() -> None:
    record, kafka, writer = _legacy_opening()
    [opened] = [e for e in legacy_example_events() if isinstance(e, CaseOpenedV1)]
    # The same case and client (a case is bound to its client's key for good: sealing one
    # naming another client is refused), other content.
    other = CaseOpenedV1(
        case_id=record.event.subject,
        client_id=opened.client_id,
        referral_source={"kind": "self"},
        presenting_need="Something else entirely",
    )
    forged = writer.seal(other, record.event_id, encode(other))
    tampered = _with_header(kafka, STORED, base64.b64encode(forged))

    for reader in (writer, build_registry()):
        with pytest.raises(UndecodableMessageError) as refused:
            _decode(tampered, reader)
        [problem] = refused.value.problems
        assert problem.field == STORED
        assert "does not upcast to the event's data" in problem.problem
        assert "first difference at data." in problem.problem


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({STORED: None}, STORED, "missing"),
        ({VERSION: None}, VERSION, "missing"),
        ({VERSION: str(CaseOpened.schema_version).encode()}, VERSION, "below schemaversion"),
        ({VERSION: b"0"}, VERSION, "whole number"),
        ({STORED: b"not base64!"}, STORED, "base64"),
        ({STORED: base64.b64encode(b"[1, 2]")}, STORED, "JSON object"),
        ({STORED: base64.b64encode(b"{not json")}, STORED, "not valid JSON"),
        ({STORED: base64.b64encode(b'{"case_id": "c"}')}, f"{STORED}: client_id", "required"),
    ],
)
def test_a_malformed_stored_form_is_refused_naming_the_header(
    changes: dict[str, bytes | None], field: str, says: str
) -> None:
    _, kafka, writer = _legacy_opening()
    for name, value in changes.items():
        kafka = _with_header(kafka, name, value)
    with pytest.raises(UndecodableMessageError) as refused:
        _decode(kafka, writer)
    assert any(p.field == field and says in p.problem for p in refused.value.problems), (
        refused.value.problems
    )


def test_a_tampered_sealed_value_in_the_stored_form_is_refused() -> None:
    record, kafka, writer = _legacy_opening()
    stored = bytearray(record.stored_form.data if record.stored_form else b"")
    at = stored.index(b"ct1~") + 40
    stored[at] = ord("A") if stored[at] != ord("A") else ord("B")
    with pytest.raises(UndecodableMessageError) as refused:
        _decode(_with_header(kafka, STORED, base64.b64encode(bytes(stored))), writer)
    assert refused.value.problems[0].field.startswith(STORED)


def test_the_envelope_schema_documents_the_pair_as_optional() -> None:
    schema = envelope_json_schema()
    assert {"storedversion", "storeddata"} <= set(schema["properties"])
    assert not {"storedversion", "storeddata"} & set(schema["required"])


async def test_a_tampered_stored_form_becomes_a_dead_letter_and_the_rest_is_delivered() -> None:
    record, kafka, writer = _legacy_opening()
    stored = StoredForm(1, b'{"case_id": "c"}')
    bus = InProcessBus(partitions=1)
    tampered = _with_header(kafka, STORED, base64.b64encode(stored.data))
    bus.append("t", tampered.key, tampered.value, tampered.headers)
    bus.append("t", kafka.key, kafka.value, kafka.headers)
    recorder = Recorder()
    async with running(bus.subscriber(writer, "t"), "g", recorder):
        await eventually(lambda: len(recorder.deliveries) == 1, "the good record")
    [delivered] = recorder.deliveries
    assert delivered.stored_form == record.stored_form
    [letter] = bus.dead_letters("g")
    headers: Sequence[tuple[str, bytes]] = letter.headers()
    reason = next(v for n, v in headers if n == "casetrail_dlq_reason")
    assert reason.startswith(DeadLetterReason.UNDECODABLE.value.encode() + b": ")
    assert STORED.encode() in reason
    assert (f"{KAFKA_HEADER_PREFIX}storeddata", tampered.headers[-1][1]) in headers
