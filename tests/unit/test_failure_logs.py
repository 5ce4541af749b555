"""Unexpected failures of background work are logged by type and place, never by message:
an exception's message (and a traceback's chained ones) may quote the event it failed on,
opened sensitive values included."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

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
