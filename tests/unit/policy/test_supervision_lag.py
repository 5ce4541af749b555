"""``AccessControl.require_supervision`` given the newest assignment the service learnt of
another way (``assignment_seen``): facts holding an older one answer ``NotCaughtUp`` to a
supervisor they allow, refuse one they do not as before, and facts whose entries hold no
sequence (kept before entries held it) are decided as they stand, never refused for ever."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.commands import NotCaughtUp
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl, AccessDenied
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import FACTS, CaseFactsReader
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.assignment import CaseAssigned
from events.catalog.base import Role

CASE = "case-1"


def supervisor(team: str) -> Principal:
    return Principal(f"super-{team}", Role.SUPERVISOR, "eastbay-dss", "test", team=team)


def assignment(sequence: int | None, team: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": CaseAssigned.event_type,
        "event_id": f"00000000-0000-0000-0000-{sequence or 0:012d}",
        "recorded_at": "2030-03-01T09:00:00+00:00",
        "worker_id": "worker-ana",
        "worker_team": team,
    }
    if sequence is not None:
        entry["sequence"] = sequence
    return entry


async def kept(read_models: SqliteReadModelStore, entries: list[dict[str, Any]]) -> None:
    """The case's facts document as the projection keeps it."""
    async with read_models.transaction() as transaction:
        await transaction.put(FACTS, CASE, {"case_id": CASE, "entries": entries})


@pytest.fixture
async def access(
    tmp_path: Path, store: SqliteEventStore
) -> AsyncIterator[tuple[AccessControl, SqliteReadModelStore]]:
    read_models = SqliteReadModelStore(tmp_path / "facts.db")
    yield (
        AccessControl(
            store,
            CaseFactsReader(read_models),
            "casetrail/planning",
            home_agency=DEFAULT_HOME_AGENCY,
        ),
        read_models,
    )
    await read_models.close()


async def test_facts_behind_the_assignment_seen_answer_not_caught_up(
    access: tuple[AccessControl, SqliteReadModelStore],
) -> None:
    control, read_models = access
    await kept(read_models, [assignment(2, "team-east")])

    await control.require_supervision(supervisor("team-east"), CASE, assignment_seen=2)
    with pytest.raises(NotCaughtUp) as raised:
        await control.require_supervision(supervisor("team-east"), CASE, assignment_seen=5)
    assert raised.value.subject == CASE
    with pytest.raises(AccessDenied):
        await control.require_supervision(supervisor("team-west"), CASE, assignment_seen=5)


async def test_facts_kept_without_sequences_are_decided_as_they_stand(
    access: tuple[AccessControl, SqliteReadModelStore],
) -> None:
    control, read_models = access
    await kept(read_models, [assignment(None, "team-east")])

    await control.require_supervision(supervisor("team-east"), CASE, assignment_seen=5)
