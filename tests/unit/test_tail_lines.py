"""`casetrail tail` prints each event as one line of ASCII JSON: what staff typed cannot move,
reorder or forge the lines a terminal shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.store.port import ANY_VERSION
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from events.envelope import EventMetadata, NewEvent
from tests.support.tailing import tailed_briefly
from tests.unit.audit.support import INTAKE_WORKER, assigned

TYPED = "Licensed\u2028to\x85counsel \u202eesrever\u2066"
"""A reason holding a line separator, a C1 next line, a right-to-left override and an
isolate: each reorders or breaks a line on a terminal that acts on it."""


async def test_a_tail_prints_what_staff_typed_escaped_on_one_ascii_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db", default_registry())
    try:
        metadata = EventMetadata(
            source="casetrail/intake",
            actor=INTAKE_WORKER,
            occurred_at=datetime.now(UTC),
            correlation_id=uuid4(),
        )
        event = assigned("case-typed").model_copy(update={"reason": TYPED})
        await store.append("case-case-typed", [NewEvent(event, metadata)], ANY_VERSION)

        await tailed_briefly(store)

        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1
        assert lines[0].isascii()
        assert json.loads(lines[0])["data"]["reason"] == TYPED
    finally:
        await store.close()
