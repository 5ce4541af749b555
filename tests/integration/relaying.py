"""Relaying to Kafka in the integration tests: events appended a round at a time, a projection
that checks each case's order, and a broker of the test's own (``PrivateBroker``; the
``private_broker`` fixture of the package's conftest starts one)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from casetrail_platform.store.sqlite import SqliteEventStore
from events.envelope import RecordedEvent
from tests.support.sample_events import note

KAFKA_INFRA = Path(__file__).resolve().parents[2] / "infra" / "kafka"


@dataclass
class CaseProjection:
    """An idempotent read model that applies each case's events strictly in order."""

    deliveries: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    applied: dict[UUID, RecordedEvent] = field(default_factory=dict)
    out_of_order: list[tuple[str, int, int]] = field(default_factory=list)

    async def __call__(self, event: RecordedEvent) -> None:
        self.deliveries += 1
        current = self.versions.get(event.stream, 0)
        if event.sequence <= current:
            return  # seen before: a redelivery
        if event.sequence != current + 1:
            self.out_of_order.append((event.stream, current, event.sequence))
            return
        self.versions[event.stream] = event.sequence
        self.applied[event.event_id] = event

    def has(self, events: list[RecordedEvent]) -> bool:
        return all(event.event_id in self.applied for event in events)


async def append_round(store: SqliteEventStore, cases: list[str]) -> list[RecordedEvent]:
    """One more event on every case, each in its own append as commands would do."""
    appended: list[RecordedEvent] = []
    for case_id in cases:
        stream = f"case-{case_id}"
        version = await store.stream_version(stream)
        appended += await store.append(stream, [note(case_id)], version)
    return appended


@dataclass
class PrivateBroker:
    """A broker of its own (own data dir and ports), so stopping it disturbs nobody else."""

    env: dict[str, str]
    bootstrap: str

    async def script(self, name: str) -> None:
        process = await asyncio.create_subprocess_exec(
            str(KAFKA_INFRA / name),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{name} failed: {stderr.decode(errors='replace')[-3000:]}")

    async def start(self) -> None:
        await self.script("start.sh")

    async def stop(self) -> None:
        await self.script("stop.sh")
