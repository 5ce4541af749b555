"""Every bus-fed handler of every service, given every event again, changes nothing.

The embedded default is the harshest redelivery there is: its bus keeps nothing across a
restart, so every relay publishes its whole store again from position 0 and every group reads
it from the start (``InProcessBus``). Marco's case is walked to its closure (coordination's
follow-ups cancel and release), the deployment restarted, and every event handed over again:
no store holds a second event (a follow-up written twice, a release booked twice) and no
read-model document differs (a caseload, a count, a budget line counted twice)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from cli.main import SERVICES
from cli.rpc import connect
from services.demo import embedded_services, walk_case

Snapshot = dict[str, tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]

CHANGING_ON_THEIR_OWN = ("ledger_witness",)
"""Collections that change with time, not with events (audit's witness of the services'
ledgers, which sign again on start)."""


def snapshot(data_dir: Path) -> Snapshot:
    taken: Snapshot = {}
    for service in SERVICES:
        directory = data_dir / service
        with sqlite3.connect(directory / "events.db") as events:
            stored = events.execute(
                "SELECT position, event_id, stream, sequence, event_type, causation_id"
                " FROM stored_events ORDER BY position"
            ).fetchall()
        with sqlite3.connect(directory / "read-models.db") as read_models:
            documents = [
                row
                for row in read_models.execute(
                    "SELECT collection, key, document FROM documents ORDER BY collection, key"
                ).fetchall()
                if not str(row[0]).startswith(CHANGING_ON_THEIR_OWN)
            ]
        taken[service] = (stored, documents)
    return taken


async def settled(data_dir: Path, *, quiet_for: int = 4, patience: float = 120.0) -> Snapshot:
    """The stores and read models once nothing has changed for ``quiet_for`` seconds."""
    last, quiet = snapshot(data_dir), 0
    async with asyncio.timeout(patience):
        while quiet < quiet_for:
            await asyncio.sleep(1)
            now = snapshot(data_dir)
            quiet = quiet + 1 if now == last else 0
            last = now
    return last


async def test_every_event_handed_over_again_changes_no_store_and_no_read_model(
    tmp_path: Path,
) -> None:
    async with embedded_services(tmp_path) as local:
        async with connect(local.addresses, local.tokens) as connection:
            await walk_case(connection, lambda _: None)
        before = await settled(tmp_path)
    # The closure's follow-ups are among what is handed over again.
    coordination_events = before["coordination"][0]
    assert any(row[5] is not None for row in coordination_events), "no follow-up recorded"

    async with embedded_services(tmp_path):
        after = await settled(tmp_path)
    for service in SERVICES:
        stored_before, documents_before = before[service]
        stored_after, documents_after = after[service]
        assert stored_after == stored_before, f"{service} recorded events on redelivery"
        changed = sorted({row[:2] for row in set(documents_after) ^ set(documents_before)}, key=str)
        assert not changed, f"{service}: documents changed on redelivery: {changed[:10]}"
