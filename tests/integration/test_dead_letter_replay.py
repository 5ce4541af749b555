"""`casetrail dlq`: dead letters of a group are listed without sensitive values and replayed
back to their topic once, however often the replay is run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError

from casetrail_platform.bus import kafka_dead_letters
from casetrail_platform.bus.deadletter import DeadLetter
from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.kafka_clients import new_producer
from casetrail_platform.bus.kafka_dead_letters import list_dead_letters, replay_dead_letters
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.message import BusMessage, as_headers
from casetrail_platform.bus.ordering import SequenceGuard
from casetrail_platform.bus.topics import TopicSettings, create_topics
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from cli.dlq import describe
from events.catalog.assignment import CaseAssigned, CaseReassigned
from events.catalog.base import Role
from events.catalog.examples import example_events
from events.catalog.monitoring import ContactLogged
from events.catalog_registry import default_registry
from events.cloudevents import to_kafka_binary
from events.dead_letters import DeadLetterReason
from events.envelope import Actor, EventMetadata, RecordedEvent
from services.planning.adapters.case_views import CASE_VIEWS, CaseViewProjection
from tests.contract.bus_conftest import delete_topics, kafka_test_settings
from tests.support.cli import casetrail_exit
from tests.support.kafka_reading import read_topic
from tests.support.servers import server_missing
from tests.support.waiting import eventually

pytestmark = pytest.mark.kafka

SECRET = "disclosed a relapse to the visiting nurse"


@pytest.fixture
async def topics() -> AsyncIterator[tuple[KafkaSettings, str, str]]:
    settings = kafka_test_settings()
    run = uuid.uuid4().hex[:10]
    topic, group = f"test.dlq-{run}", f"test.dlq-{run}.timeline"
    try:
        await create_topics(
            settings, TopicSettings(case_events_topic=topic, partitions=2).new_topics([group])
        )
    except Exception as error:
        server_missing("Kafka", error)
    try:
        yield settings, topic, group
    finally:
        await delete_topics(settings, [topic, f"{group}.dlq"])


def contact_logged() -> RecordedEvent:
    [example] = [e for e in example_events() if isinstance(e, ContactLogged)]
    event = example.model_copy(update={"summary": SECRET})
    return RecordedEvent(
        event_id=uuid4(),
        stream=f"case-{event.case_id}",
        sequence=1,
        position=1,
        recorded_at=datetime.now(UTC),
        event=event,
        metadata=EventMetadata(
            source="casetrail/planning",
            actor=Actor("sw-1", Role.SOCIAL_WORKER),
            occurred_at=datetime.now(UTC),
            correlation_id=uuid4(),
        ),
    )


async def dead_letter(
    settings: KafkaSettings, topic: str, group: str, event: RecordedEvent
) -> None:
    key, headers, value = to_kafka_binary(event)
    letter = DeadLetter(
        message=BusMessage(topic, 0, 41, key, value, as_headers(headers)),
        group=group,
        reason=DeadLetterReason.HANDLER_FAILED,
        # A reason that quotes the sensitive text, as a careless error message would.
        detail=f"cannot apply summary {SECRET!r}: bad things",
        exception_type="builtins.ValueError",
        attempts=1,
    )
    producer = new_producer(settings, "test-dlq")
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{group}.dlq", value=value, key=key, headers=list(letter.headers())
        )
    finally:
        await producer.stop()


async def test_list_redacts_and_replay_puts_each_letter_back_once(
    topics: tuple[KafkaSettings, str, str],
) -> None:
    settings, topic, group = topics
    event = contact_logged()
    await dead_letter(settings, topic, group, event)

    [stored] = await list_dead_letters(settings, group)
    text = describe(stored)
    assert SECRET not in text
    assert "[redacted]" in text
    assert "handler-failed" in text
    assert str(event.event_id) in text
    assert not stored.replayed

    [replayed] = (await replay_dead_letters(settings, group)).replayed
    assert replayed.message.topic == topic
    again = await replay_dead_letters(settings, group)
    assert again.replayed == []  # nothing new: nothing sent again

    on_topic = await read_topic(settings, topic, 2)
    assert [dict(m.headers)["ce_id"].decode() for m in on_topic] == [str(event.event_id)]
    assert on_topic[0].value == to_kafka_binary(event).value
    [listed] = await list_dead_letters(settings, group)
    assert listed.replayed


async def test_a_dead_letter_of_a_sealed_event_carries_its_ciphertext(
    topics: tuple[KafkaSettings, str, str],
) -> None:
    from casetrail_platform.store.rows import recorded_from_new, sealed_data
    from events.envelope import NewEvent
    from events.registry import encode
    from tests.unit.keys.support import protected

    settings, topic, group = topics
    plain = contact_logged()
    registry = protected()
    new = NewEvent(plain.event, plain.metadata, plain.event_id)
    [data] = await sealed_data(registry, [new], [encode(plain.event)])
    sealed = recorded_from_new(new, plain.stream, 1, 1, plain.recorded_at, data)
    await dead_letter(settings, topic, group, sealed)

    [letter] = await read_topic(settings, f"{group}.dlq", 1)

    assert letter.value == data
    assert SECRET.encode() not in letter.value
    assert b"ct1~" in letter.value


async def raw_letters(
    settings: KafkaSettings, group: str, letters: list[tuple[bytes, list[tuple[str, bytes]]]]
) -> None:
    """Write records to the group's dead-letter topic as given (value, headers), compressed:
    a large value fits the topic's bound as the consumer that dead-lettered it read it."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        compression_type="gzip",
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        for value, headers in letters:
            await producer.send_and_wait(f"{group}.dlq", value=value, key=b"c", headers=headers)
    finally:
        await producer.stop()


def letter_headers(
    topic: str, group: str, offset: int, reason: str = "handler-failed: ValueError"
) -> list[tuple[str, bytes]]:
    return [
        ("ce_id", f"ev-{offset}".encode()),
        ("ce_type", b"casetrail.contact.logged"),
        ("casetrail_dlq_reason", reason.encode()),
        ("casetrail_dlq_group", group.encode()),
        ("casetrail_dlq_topic", topic.encode()),
        ("casetrail_dlq_partition", b"0"),
        ("casetrail_dlq_offset", str(offset).encode()),
        ("casetrail_dlq_attempts", b"3"),
    ]


async def replay_command(settings: KafkaSettings, group: str) -> int:
    bootstrap = settings.bootstrap_servers
    assert isinstance(bootstrap, str)
    arguments = ("dlq", "replay", group, "--bootstrap", bootstrap)
    return await asyncio.to_thread(casetrail_exit, *arguments)


async def test_a_letter_the_broker_refuses_stops_the_replay_after_those_before_it(
    topics: tuple[KafkaSettings, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each letter is committed once acknowledged: one refused (here, larger than a request)
    ends the replay naming it, exit 1, and the next replay starts at it. The commit came only
    after every letter was sent, so a refusal re-sent the letters before it on every replay
    and never reached those after it."""
    settings, topic, group = topics
    too_large = b"0" * (2 * 1024 * 1024)
    await raw_letters(
        settings,
        group,
        [
            (b"{}", letter_headers(topic, group, 0)),
            (too_large, letter_headers(topic, group, 1)),
            (b"{}", letter_headers(topic, group, 2)),
        ],
    )

    for _ in range(2):
        assert await replay_command(settings, group) == 1
        err = capsys.readouterr().err
        assert f"stopped: {topic} refused ev-1 (MessageSizeTooLargeError" in err, err
        assert "Traceback" not in err

    on_topic = await read_topic(settings, topic, 2)
    assert [dict(m.headers)["ce_id"] for m in on_topic] == [b"ev-0"]  # sent once, not twice
    listed = await list_dead_letters(settings, group)
    assert [stored.replayed for stored in listed] == [True, False, False]


class _NotAuthorizedInItsGroup(AIOKafkaConsumer):  # type: ignore[misc]
    """A consumer of a login without Describe on its group: the broker refuses the group's
    committed offsets, which aiokafka raises as GroupAuthorizationFailedError."""

    async def committed(self, partition: TopicPartition) -> int | None:
        raise GroupAuthorizationFailedError(self._group_id)


async def test_a_login_not_authorized_in_the_replay_group_is_told_not_a_traceback(
    topics: tuple[KafkaSettings, str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator's Kafka login lacking its ACL on ``<GROUP>.dlq.replay``: list and replay
    ended in aiokafka's traceback; now one line naming the group, exit 2."""
    settings, topic, group = topics
    await dead_letter(settings, topic, group, contact_logged())
    monkeypatch.setattr(kafka_dead_letters, "AIOKafkaConsumer", _NotAuthorizedInItsGroup)
    bootstrap = settings.bootstrap_servers
    assert isinstance(bootstrap, str)

    for action in ("list", "replay"):
        arguments = ("dlq", action, group, "--bootstrap", bootstrap)
        assert await asyncio.to_thread(casetrail_exit, *arguments) == 2
        err = capsys.readouterr().err
        assert (
            f"casetrail dlq: Kafka did not authorize this login: consumer group"
            f" {group}.dlq.replay (GROUP_AUTHORIZATION_FAILED)" in err
        ), err


async def test_a_record_that_is_no_readable_letter_is_never_marked_replayed(
    topics: tuple[KafkaSettings, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A record ``parse_dead_letter`` refuses (a reason code of a newer version, here) holds
    its partition's replay before it, said so, exit 1: it was skipped and committed past, so
    it showed as replayed, dropped out of ``dlq list`` and was never sent."""
    settings, topic, group = topics
    newer = "handler_failed: ValueError at x.py:1"
    await raw_letters(
        settings,
        group,
        [
            (b"{}", letter_headers(topic, group, 0)),
            (b"{}", letter_headers(topic, group, 1, newer)),
            (b"{}", letter_headers(topic, group, 2)),
        ],
    )

    for _ in range(2):
        assert await replay_command(settings, group) == 1
        err = capsys.readouterr().err
        problem = "casetrail_dlq_reason: a reason code 'handler_failed' this version does not know"
        assert f"{group}.dlq/0@1 not replayed: unreadable ({problem})" in err, err
        assert "1 dead letters wait behind an unreadable one" in err, err

    on_topic = await read_topic(settings, topic, 2)
    assert [dict(m.headers)["ce_id"] for m in on_topic] == [b"ev-0"]
    listed = await list_dead_letters(settings, group)
    assert [stored.replayed for stored in listed] == [True, False, False]
    assert f"[pending] unreadable: {problem}" in describe(listed[1])


def contact_of_case(case_id: str, sequence: int) -> RecordedEvent:
    example = contact_logged()
    return RecordedEvent(
        event_id=uuid4(),
        stream=f"case-{case_id}",
        sequence=sequence,
        position=sequence,
        recorded_at=example.recorded_at,
        event=example.event.model_copy(update={"case_id": case_id}),
        metadata=example.metadata,
    )


async def test_a_replayed_letter_does_not_hold_back_its_case_after_a_restart(
    topics: tuple[KafkaSettings, str, str],
) -> None:
    # A replayed letter comes after later events of its case. A consumer restarted since (its
    # ordering guard starting afresh) took the replayed sequence as the stream's start and
    # withheld every later event of the case, waiting for events it had long applied.
    settings, topic, group = topics
    case_id = str(uuid4())
    events = [contact_of_case(case_id, sequence) for sequence in (1, 2, 3, 4)]
    seen: list[int] = []

    async def handler(record: RecordedEvent) -> None:
        seen.append(record.sequence)

    async def consume_until(count: int) -> None:
        stop = asyncio.Event()
        subscriber = KafkaEventSubscriber(settings, default_registry(), topic=topic)
        running = asyncio.create_task(
            subscriber.run(group, handler, stop, ordering=SequenceGuard("test"))
        )

        async def probe() -> bool | None:
            return True if len(seen) >= count else None

        try:
            await eventually(probe, f"{count} events handled")
        finally:
            stop.set()
            await running

    async with KafkaEventPublisher(settings, topic) as publisher:
        await publisher.publish(events[:3])
        await consume_until(3)  # 1, 2, 3 applied and committed
        await dead_letter(settings, topic, group, events[1])
        await replay_dead_letters(settings, group)  # 2 again, after 3
        await publisher.publish(events[3:])
        await consume_until(5)

    assert seen == [1, 2, 3, 2, 4]


async def test_a_replayed_assignment_leaves_the_case_view_with_the_later_worker(
    topics: tuple[KafkaSettings, str, str], tmp_path: Path
) -> None:
    # The assignment failed when first delivered (dead-lettered); the reassignment after it was
    # applied. Replayed once the cause is fixed, the assignment comes after the reassignment:
    # planning's case view must keep the worker the case was handed to.
    settings, topic, group = topics
    case_id = str(uuid4())

    def coordination(event: CaseAssigned | CaseReassigned, sequence: int) -> RecordedEvent:
        return RecordedEvent(
            event_id=uuid4(),
            stream=f"case-{case_id}",
            sequence=sequence,
            position=sequence,
            recorded_at=datetime.now(UTC),
            event=event,
            metadata=EventMetadata(
                source="casetrail/coordination",
                actor=Actor("coord-1", Role.COORDINATOR),
                occurred_at=datetime.now(UTC),
                correlation_id=uuid4(),
            ),
        )

    assigned = coordination(
        CaseAssigned(
            case_id=case_id, worker_id="sw-ana", worker_role=Role.SOCIAL_WORKER, reason="fits"
        ),
        1,
    )
    reassigned = coordination(
        CaseReassigned(
            case_id=case_id,
            previous_worker_id="sw-ana",
            worker_id="sw-bo",
            worker_role=Role.SOCIAL_WORKER,
            reason="leave",
        ),
        2,
    )
    read_models = SqliteReadModelStore(tmp_path / "read-models.db")
    projection = BusProjectionHandler(read_models, CaseViewProjection(), service="planning")
    handled: list[int] = []

    async def handler(record: RecordedEvent) -> None:
        await projection(record)
        handled.append(record.sequence)

    async def consume_until(count: int) -> None:
        stop = asyncio.Event()
        subscriber = KafkaEventSubscriber(settings, default_registry(), topic=topic)
        running = asyncio.create_task(
            subscriber.run(group, handler, stop, ordering=SequenceGuard("test"))
        )

        async def probe() -> bool | None:
            return True if len(handled) >= count else None

        try:
            await eventually(probe, f"{count} events handled")
        finally:
            stop.set()
            await running

    try:
        await dead_letter(settings, topic, group, assigned)
        async with KafkaEventPublisher(settings, topic) as publisher:
            await publisher.publish([reassigned])
        await consume_until(1)
        await replay_dead_letters(settings, group)
        await consume_until(2)

        assert handled == [2, 1]
        view = await read_models.get(CASE_VIEWS, case_id)
        assert view is not None
        assert view["worker_id"] == "sw-bo"
    finally:
        await read_models.close()
