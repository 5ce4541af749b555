"""Unexpected failures of background work are logged by type and place, never by message:
an exception's message (and a traceback's chained ones) may quote the event it failed on,
opened sensitive values included."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from casetrail_platform.bus.port import EventPublisher
from casetrail_platform.bus.retry import Backoff
from casetrail_platform.checkpoints import InMemoryCheckpointStore
from casetrail_platform.hosting import host_for
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.projections.port import DocumentTransaction, Projection
from casetrail_platform.projections.runner import follow
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.store.sqlite import SqliteEventStore
from events.envelope import RecordedEvent
from tests.support.sample_events import NoteWritten, note, sample_registry

CANARY = "CANARY-heroin-relapse-7731"


class QuotesTheEvent(Projection):
    """A projection with a bug that, like many, builds its message from the event."""

    name = "quotes-the-event"
    collections = ("quoted",)

    async def apply(self, transaction: DocumentTransaction, recorded: RecordedEvent) -> None:
        assert isinstance(recorded.event, NoteWritten)
        try:
            int(recorded.event.text)
        except ValueError as error:
            raise RuntimeError(f"cannot file note {recorded.event.text!r}") from error


async def test_a_failing_projection_logs_no_event_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    read_models = SqliteReadModelStore(tmp_path / "read-models.db")
    await store.append("case-1", [note("1", CANARY)], NO_STREAM)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING):
        following = asyncio.create_task(follow(store, read_models, QuotesTheEvent(), stop))
        for _ in range(200):
            if caplog.records:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await following
    await read_models.close()
    await store.close()
    assert "projection quotes-the-event failed" in caplog.text
    assert "RuntimeError" in caplog.text
    assert CANARY not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)


class QuotingPublisher(EventPublisher):
    """A publisher with a bug that quotes the records it fails on."""

    def __init__(self) -> None:
        self.attempts = 0

    @property
    def durable(self) -> bool:
        return True

    async def publish(self, records: Sequence[RecordedEvent]) -> None:
        self.attempts += 1
        event = records[0].event
        assert isinstance(event, NoteWritten)
        raise ValueError(f"cannot encode {event.text!r}")


async def test_a_failing_relay_logs_and_reports_no_event_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    await store.append("case-1", [note("1", CANARY)], NO_STREAM)
    publisher = QuotingPublisher()
    relay = OutboxRelay(
        store,
        publisher,
        InMemoryCheckpointStore(),
        "relay",
        backoff=Backoff(initial=0.01, maximum=0.02),
        idle_timeout=0.05,
    )
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING):
        relaying = asyncio.create_task(relay.run(stop))
        for _ in range(200):
            if publisher.attempts >= 2:
                break
            await asyncio.sleep(0.01)
        status = await relay.status()
        stop.set()
        await relaying
    await store.close()
    assert "relay relay failed" in caplog.text
    assert "ValueError" in caplog.text
    assert CANARY not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
    # The status's last error is logged by the outbox's health watch.
    assert status.last_error is not None
    assert "ValueError" in status.last_error
    assert CANARY not in status.last_error


async def test_a_failed_background_task_logs_no_value_it_quoted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = await host_for(Infrastructure(data_dir=tmp_path, seal_sensitive=False), "test")

    async def quotes_a_value() -> None:
        raise LookupError(f"no worker for {CANARY!r}")

    with caplog.at_level(logging.WARNING):
        host._spawn(quotes_a_value())
        await asyncio.gather(*host._tasks)
    await host._close_all()
    assert "test: background task failed" in caplog.text
    assert "LookupError" in caplog.text
    assert CANARY not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)


def test_the_caseload_processor_logs_an_undecodable_message_by_type_and_place(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from services.caseload import processor

    def quoting(*_: object) -> RecordedEvent:
        raise ValueError(f"cannot read {CANARY!r}")

    monkeypatch.setattr(processor, "tracked_event", quoting)
    app = SimpleNamespace(counters=processor.Counters(), registry=None)
    message = SimpleNamespace(
        topic="casetrail.case-events", partition=0, offset=7, key=b"k", value=b"{}", headers=[]
    )
    with caplog.at_level(logging.WARNING):
        assert processor.CaseloadApp.decode(app, message) is None  # type: ignore[arg-type]
    assert app.counters.undecodable == 1
    assert "ValueError" in caplog.text
    assert CANARY not in caplog.text
