"""A record Faust's fetch skipped is read again, never committed past: the caseload
processor's consumer takes a jump in a partition's offsets for a gap in the log (a
transaction's markers) only once reading it again gives the same jump. Faust took every jump
for a gap, and a case event skipped while a worker started was committed past and lost (one
contact missing from a worker's day, after a kill -9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, Message

from services.caseload.consumer import EndOffsetsConsumer
from services.caseload.processor import build_app
from services.caseload.settings import CaseloadSettings

EVENTS = TP("casetrail.case-events", 1)
FACTS = TP("caseload-worker-facts", 2)


class Fetches:
    """The batches Faust's own ``getmany`` returns, one per call, and the seeks asked for."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[TP, int]]] = []
        self.seeks: list[tuple[TP, int]] = []

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109
        for tp, offset in self.batches.pop(0):
            yield tp, cast(Message, SimpleNamespace(offset=offset))

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


@pytest.fixture
def consumer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EndOffsetsConsumer, Fetches]:
    app = build_app(CaseloadSettings(data_dir=tmp_path / "caseload", web_enabled=False))
    consumer = app.consumer
    assert isinstance(consumer, EndOffsetsConsumer)
    fetches = Fetches()
    monkeypatch.setattr(FaustConsumer, "getmany", fetches.getmany)
    monkeypatch.setattr(consumer, "_seek", fetches.seek)
    return consumer, fetches


async def drained(
    consumer: EndOffsetsConsumer, fetches: Fetches, batch: list[tuple[TP, int]]
) -> list[int]:
    """The offsets ``consumer`` delivers of ``batch``, each taken as Faust's drain loop takes
    it (its read offset set once delivered)."""
    fetches.batches.append(batch)
    delivered = []
    async for tp, message in consumer.getmany(timeout=1.0):
        consumer._read_offset[tp] = message.offset
        delivered.append(message.offset)
    return delivered


async def test_a_skipped_record_is_read_again_before_any_later_one_is_delivered(
    consumer: tuple[EndOffsetsConsumer, Fetches],
) -> None:
    faust_consumer, fetches = consumer
    faust_consumer._read_offset[EVENTS] = 206
    faust_consumer._read_offset[FACTS] = 40
    # 207 skipped: nothing of its partition after it is delivered, the others are.
    assert await drained(faust_consumer, fetches, [(EVENTS, 208), (FACTS, 41), (EVENTS, 209)]) == [
        41
    ]
    assert fetches.seeks == [(EVENTS, 206)]
    # Read again from the last delivered (delivered twice: the stream's folds are idempotent).
    assert await drained(
        faust_consumer, fetches, [(EVENTS, 206), (EVENTS, 207), (EVENTS, 208)]
    ) == [
        206,
        207,
        208,
    ]
    assert fetches.seeks == [(EVENTS, 206)]


async def test_a_jump_read_again_to_the_same_offset_is_a_gap_in_the_log(
    consumer: tuple[EndOffsetsConsumer, Fetches],
) -> None:
    faust_consumer, fetches = consumer
    faust_consumer._read_offset[FACTS] = 65
    # A transaction's records rolled back and its marker: the broker returns 124 next.
    assert await drained(faust_consumer, fetches, [(FACTS, 124), (FACTS, 125)]) == []
    assert await drained(faust_consumer, fetches, [(FACTS, 65), (FACTS, 124), (FACTS, 125)]) == [
        65,
        124,
        125,
    ]
    assert fetches.seeks == [(FACTS, 65)]
    # The next jump is read again in its turn.
    assert await drained(faust_consumer, fetches, [(FACTS, 127)]) == []
    assert fetches.seeks == [(FACTS, 65), (FACTS, 125)]


async def test_a_changelog_read_by_recovery_is_left_to_faust(
    consumer: tuple[EndOffsetsConsumer, Fetches],
) -> None:
    """Recovery keeps its own offsets and takes a record only once, and a changelog holds a
    marker for each transaction of its history: reading each jump again would cost a fetch
    per transaction at every restart."""
    faust_consumer, fetches = consumer
    changelog = TP(sorted(faust_consumer.app.tables.changelog_topics)[0], 0)
    faust_consumer._read_offset[changelog] = 10
    assert await drained(faust_consumer, fetches, [(changelog, 12), (changelog, 13)]) == [12, 13]
    assert fetches.seeks == []
