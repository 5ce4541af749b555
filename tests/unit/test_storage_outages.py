"""Issue 8: a consumer whose database is away pauses and retries; it never dead-letters the
event, however long the outage (longer than its retry policy allows for other errors). Commands
that meet the outage are answered UNAVAILABLE, never UNKNOWN."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
import pytest
from google.rpc import code_pb2

from casetrail_platform.bus.deadletter import DeadLetter
from casetrail_platform.bus.delivery import Deliverer, StallListener, decoder_for
from casetrail_platform.bus.errors import is_outage, is_retriable
from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.bus.message import BusMessage, Headers, as_headers
from casetrail_platform.bus.retry import Backoff, RetryPolicy
from casetrail_platform.errors import StorageUnavailableError
from casetrail_platform.grpc_platform.errors import status_for
from cli.dlq import redact
from cli.main import main
from events.cloudevents import to_kafka_binary
from events.envelope import RecordedEvent
from tests.contract.bus_conftest import Recorder, eventually, recorded, running
from tests.support.sample_events import sample_registry

FAST = Backoff(initial=0.001, maximum=0.001)


def sqlite_error(*, locked: bool) -> sqlite3.OperationalError:
    """A real error of SQLite: the file held by another connection (BUSY), or a bad statement."""
    with TemporaryDirectory() as directory:
        path = Path(directory) / "read-models.db"
        holder = sqlite3.connect(path, isolation_level=None)
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            holder.execute("BEGIN IMMEDIATE")
            other.execute("BEGIN IMMEDIATE" if locked else "SELECT * FROM no_such_table")
        except sqlite3.OperationalError as error:
            return error
        finally:
            holder.close()
            other.close()
    raise AssertionError("SQLite raised nothing")


OUTAGES: list[Exception] = [
    StorageUnavailableError("planning read models"),
    psycopg.OperationalError("terminating connection due to administrator command"),
    sqlite_error(locked=True),
]


OUTAGE_IDS = ["storage-unavailable", "psycopg-operational", "sqlite-busy"]


@pytest.mark.parametrize("outage", OUTAGES, ids=OUTAGE_IDS)
async def test_a_handler_meeting_an_outage_is_retried_past_its_policy_never_dead_lettered(
    outage: Exception,
) -> None:
    bus = InProcessBus()
    failures = 8  # twice the policy's attempts
    recorder = Recorder()

    async def database_away_for_a_while(event: RecordedEvent) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise outage
        await recorder(event)

    subscriber = bus.subscriber(
        sample_registry(),
        "t",
        retry=RetryPolicy(backoff=FAST, max_attempts=4, outage_backoff=FAST),
    )
    events = [recorded("c-1", 1, 1), recorded("c-1", 2, 2)]
    await bus.publisher("t").publish(events)
    async with running(subscriber, "g", database_away_for_a_while):
        await eventually(lambda: recorder.has_all(events), "both events applied")
    assert bus.dead_letters("g") == []
    assert [e.event_id for e in recorder.deliveries] == [e.event_id for e in events]


async def test_a_consumer_outlives_an_outage_of_more_than_1025_failures() -> None:
    """The outage pause's backoff overflowed at its 1,025th failure (``2.0 ** 1024``) and the
    consumer's task ended: nothing more was applied once the database was back."""
    bus = InProcessBus()
    recorder = Recorder()
    calls = 0

    async def database_away_for_long(event: RecordedEvent) -> None:
        nonlocal calls
        calls += 1
        if calls <= 1_100:
            raise StorageUnavailableError("read models")
        await recorder(event)

    tiny = Backoff(initial=1e-5, maximum=1e-5, jitter=0.0)
    subscriber = bus.subscriber(sample_registry(), "t", retry=RetryPolicy(outage_backoff=tiny))
    events = [recorded("c-1", 1, 1)]
    await bus.publisher("t").publish(events)
    async with running(subscriber, "g", database_away_for_long):
        await eventually(lambda: recorder.has_all(events), "the event applied after the outage")
    assert calls == 1_101
    assert bus.dead_letters("g") == []


@pytest.mark.parametrize("outage", OUTAGES, ids=OUTAGE_IDS)
async def test_a_decoder_meeting_an_outage_waits_for_it_and_keeps_the_order(
    outage: Exception,
) -> None:
    """Opening sealed values reads the data-key table: while its database restarts, decoding
    fails for want of it, not for the message (CI once dead-lettered three events so)."""
    registry = sample_registry()
    events = [recorded("c-1", 1, 1), recorded("c-1", 2, 2), recorded("c-1", 3, 3)]
    messages = [BusMessage("t", 0, offset, *_binary(event)) for offset, event in enumerate(events)]
    real = decoder_for(registry)
    away = {messages[1].offset: 5}

    def decode(message: BusMessage) -> RecordedEvent | Exception:
        if away.get(message.offset):
            away[message.offset] -= 1
            return outage
        return real(message)

    recorder = Recorder()
    letters: list[DeadLetter] = []

    async def keep(letter: DeadLetter) -> bool:
        letters.append(letter)
        return True

    deliverer = Deliverer(
        "g",
        recorder,
        registry,
        RetryPolicy(backoff=FAST, max_attempts=2, outage_backoff=FAST),
        keep,
        decode=decode,
    )
    assert await deliverer.deliver(messages, asyncio.Event()) == len(messages)
    assert letters == []
    assert [e.event_id for e in recorder.deliveries] == [e.event_id for e in events]


def _binary(event: RecordedEvent) -> tuple[bytes | None, bytes | None, Headers]:
    key, headers, value = to_kafka_binary(event)
    return key, value, as_headers(headers)


async def test_a_batch_handler_meeting_an_outage_keeps_the_batch_whole() -> None:
    bus = InProcessBus()
    calls: list[int] = []

    class Projection:
        async def handle_batch(self, records: Sequence[RecordedEvent]) -> None:
            calls.append(len(records))
            if len(calls) < 6:
                raise StorageUnavailableError("audit read models")

    subscriber = bus.subscriber(
        sample_registry(),
        "t",
        retry=RetryPolicy(backoff=FAST, max_attempts=2, outage_backoff=FAST),
    )
    await bus.publisher("t").publish([recorded("c-1", n, n) for n in (1, 2, 3)])
    async with running(subscriber, "g", Projection()):
        await eventually(lambda: len(calls) == 6, "the batch applied after the outage")
    assert bus.dead_letters("g") == []
    assert calls == [3] * 6  # never split into single records, never given up


def test_outages_are_retriable_and_other_database_errors_are_not_outages() -> None:
    for outage in OUTAGES:
        assert is_outage(outage)
        assert is_retriable(outage)
    assert not is_outage(psycopg.errors.UntranslatableCharacter("\\u0000 in jsonb"))
    assert not is_outage(ValueError("bad event"))
    # A file another process holds past the busy timeout is waited out (a read model must not
    # dead-letter an event for it); a statement SQLite cannot run is the code's fault.
    busy = OUTAGES[-1]
    assert isinstance(busy, sqlite3.OperationalError)
    assert busy.sqlite_errorname == "SQLITE_BUSY"
    assert not is_outage(sqlite_error(locked=False))


def test_storage_unavailable_is_answered_unavailable_without_driver_text() -> None:
    error = StorageUnavailableError("planning event store")
    error.__cause__ = psycopg.OperationalError("connection to server at 127.0.0.1 failed")
    status = status_for(error)
    assert status.code == code_pb2.UNAVAILABLE
    assert status.message == "the planning event store is unavailable; retry later"
    assert "127.0.0.1" not in str(status)


def test_dlq_reasons_never_show_sensitive_values() -> None:
    value = b'{"case_id": "c-1", "summary": "spoke about her debts"}'
    detail = "cannot apply: summary 'spoke about her debts' is odd"
    shown = redact(detail, "casetrail.contact.logged", value)
    assert "debts" not in shown
    assert "[redacted]" in shown
    quoted = "1 validation error\n  input_value='spoke about her d...', input_type=str]"
    assert "spoke" not in redact(quoted, "casetrail.contact.logged", value)
    # Unknown type or unreadable data: the sensitive fields are unknown, so nothing is shown.
    assert "debts" not in redact(detail, "casetrail.unknown", value)
    assert "debts" not in redact(detail, "casetrail.contact.logged", b"\xff")


def test_dlq_on_the_embedded_bus_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dlq", "list", "casetrail.audit.timeline", "--backend", "embedded"])
    assert exit_.value.code == 2
    assert "restart" in capsys.readouterr().err


def _stalling(
    handler: Callable[[RecordedEvent], Awaitable[None]], on_stalled: StallListener
) -> tuple[Deliverer, list[BusMessage]]:
    """A deliverer whose handler's storage may be away (an outage is retried, never
    dead-lettered), telling ``on_stalled`` at each retry round; one message for it."""

    async def keep(letter: DeadLetter) -> bool:
        raise AssertionError("an outage is never dead-lettered")

    deliverer = Deliverer(
        "g",
        handler,
        sample_registry(),
        RetryPolicy(backoff=FAST, max_attempts=2, outage_backoff=FAST),
        keep,
        on_stalled=on_stalled,
    )
    return deliverer, [BusMessage("t", 0, 0, *_binary(recorded("c-1", 1, 1)))]


async def test_a_retry_never_waits_for_the_stalled_consumers_lag_report() -> None:
    """The lag report runs beside the retry's wait: with the broker not answering it, the
    handler's next attempt comes all the same (before, each round waited for the report's
    bound, 2 s on Kafka); one report at a time, and the one still asking is given up once
    the records are handled."""
    attempts = 0
    reports: list[asyncio.Future[None]] = []

    async def broker_away_too() -> None:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        reports.append(never)
        await never

    async def database_back_on_the_third(event: RecordedEvent) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise StorageUnavailableError("planning read models")

    deliverer, messages = _stalling(database_back_on_the_third, broker_away_too)
    assert await asyncio.wait_for(deliverer.deliver(messages, asyncio.Event()), 10) == 1
    assert attempts == 3
    assert len(reports) == 1  # the second round found the first report still asking
    await asyncio.sleep(0)
    assert reports[0].cancelled()


async def test_a_stalled_consumer_telling_its_lag_never_holds_up_stop() -> None:
    """While the storage is away a consumer reports its lag at each retry round (on Kafka by
    asking the broker): with the broker away too that answer may never come, and stop must
    not wait for it."""
    stop = asyncio.Event()
    asked = asyncio.Event()

    async def broker_away_too() -> None:
        asked.set()
        await asyncio.Event().wait()  # never answers

    async def database_away(event: RecordedEvent) -> None:
        raise StorageUnavailableError("planning read models")

    deliverer, messages = _stalling(database_away, broker_away_too)
    delivering = asyncio.ensure_future(deliverer.deliver(messages, stop))
    await asyncio.wait_for(asked.wait(), 10)
    stop.set()
    assert await asyncio.wait_for(delivering, 10) == 0
