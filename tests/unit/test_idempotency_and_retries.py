"""Idempotency keys and lost races, below the services: the fingerprint that tells a retry
from a reused key, and a decision that keeps trying while its stream is busy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from casetrail.common.v1 import common_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.commands import CommandContext, IdempotencyKeyReused
from casetrail_platform.decide import execute, recorded_before
from casetrail_platform.grpc_platform.fingerprint import fingerprint_of
from casetrail_platform.store.port import NO_STREAM, StreamVersion
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.envelope import Actor, EventMetadata, NewEvent
from tests.support.sample_events import NoteWritten, sample_registry

WORKER = Actor("maria.lopez", Role.SOCIAL_WORKER)


def contact(
    summary: str, key: str = "k-1", correlation: str = ""
) -> planning_pb2.LogContactRequest:
    return planning_pb2.LogContactRequest(
        context=common_pb2.CommandContext(idempotency_key=key, correlation_id=correlation),
        case_id="case-1",
        kind="phone_call",
        summary=summary,
    )


def test_the_fingerprint_ignores_the_context_and_nothing_else() -> None:
    first = fingerprint_of(contact("called her daughter"))

    assert fingerprint_of(contact("called her daughter", key="k-2", correlation="c")) == first
    assert fingerprint_of(contact("called her son")) != first
    assert fingerprint_of(planning_pb2.LogContactRequest(case_id="case-1")) != fingerprint_of(
        planning_pb2.EvaluateProgressRequest(case_id="case-1")
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db", sample_registry())
    yield opened
    await opened.close()


def note(text: str) -> list[NoteWritten]:
    return [NoteWritten(case_id="1", text=text, words=len(text.split()))]


async def test_a_retry_gets_the_first_result_and_a_reused_key_is_refused(
    store: SqliteEventStore,
) -> None:
    first = CommandContext(WORKER, "k-1", request_fingerprint="a" * 64)
    recorded = await execute(store, "svc", first, "case-1", lambda _: note("first"))

    retried = CommandContext(WORKER, "k-1", request_fingerprint="a" * 64)
    assert await execute(store, "svc", retried, "case-1", lambda _: note("x")) == recorded
    reused = CommandContext(WORKER, "k-1", request_fingerprint="b" * 64)
    with pytest.raises(IdempotencyKeyReused):
        await execute(store, "svc", reused, "case-1", lambda _: note("second"))
    assert await store.stream_version("case-1") == 1


async def test_a_command_recorded_before_is_answered_as_execute_answers_its_retry(
    store: SqliteEventStore,
) -> None:
    # The look an entrypoint takes before a check that may have changed since the first
    # attempt (a supervisor's team): the same answers as ``execute``, and nothing written.
    first = CommandContext(WORKER, "k-1", request_fingerprint="a" * 64)
    assert await recorded_before(store, "svc", first) is None
    recorded = await execute(store, "svc", first, "case-1", lambda _: note("first"))

    retried = CommandContext(WORKER, "k-1", request_fingerprint="a" * 64)
    assert await recorded_before(store, "svc", retried) == recorded
    assert await recorded_before(store, "other", retried) is None  # keys are per service
    reused = CommandContext(WORKER, "k-1", request_fingerprint="b" * 64)
    with pytest.raises(IdempotencyKeyReused):
        await recorded_before(store, "svc", reused)
    assert await store.stream_version("case-1") == 1


async def test_sixty_decisions_on_one_stream_at_once_all_succeed(
    store: SqliteEventStore,
) -> None:
    results = await asyncio.gather(
        *(
            execute(
                store,
                "svc",
                CommandContext(WORKER, f"k-{number}"),
                "case-1",
                lambda _history, n=number: note(f"contact {n}"),  # type: ignore[misc]
            )
            for number in range(60)
        )
    )

    assert sorted(r[0].sequence for r in results) == list(range(1, 61))


async def test_one_key_for_two_requests_on_two_streams_at_once_records_one(
    store: SqliteEventStore,
) -> None:
    # Both would find no earlier attempt (each reads before the other appends) unless they
    # take turns on the command, not only on their streams.
    async def run(stream: str, fingerprint: str) -> object:
        context = CommandContext(WORKER, "k-1", request_fingerprint=fingerprint)
        try:
            return await execute(store, "svc", context, stream, lambda _: note(stream))
        except IdempotencyKeyReused as refused:
            return refused

    results = await asyncio.gather(run("case-1", "a" * 64), run("case-2", "b" * 64))

    assert sum(isinstance(r, IdempotencyKeyReused) for r in results) == 1
    assert await store.stream_version("case-1") + await store.stream_version("case-2") == 1


@pytest.mark.parametrize("expected_version", [None, 1], ids=["any", "stated"])
async def test_a_decision_whose_guarded_stream_moved_reads_it_again_and_decides_again(
    store: SqliteEventStore, expected_version: int | None
) -> None:
    """The guarded stream (another one the decision read) moves between the guard's read and
    the append: the append loses as a race, and the command reads both streams again and
    decides on what it finds, even when it stated its own stream's version (which did not
    move, so it is not refused ABORTED)."""
    await execute(store, "svc", CommandContext(WORKER, "k-0"), "case-1", lambda _: note("opened"))
    await store.append("client-1", [NewEvent(note("registered")[0], _metadata())], NO_STREAM)
    seen: list[int] = []

    async def guard() -> StreamVersion:
        version = await store.stream_version("client-1")
        seen.append(version)
        if len(seen) == 1:
            # Another writer appends to the guarded stream once it was read.
            await store.append("client-1", [NewEvent(note("erased")[0], _metadata())], version)
        return StreamVersion("client-1", version)

    context = CommandContext(WORKER, "k-1", expected_version=expected_version)
    recorded = await execute(
        store, "svc", context, "case-1", lambda _: note(f"decided on {seen[-1]}"), guard=guard
    )

    assert seen == [1, 2]
    assert [r.event for r in recorded] == note("decided on 2")
    assert await store.stream_version("case-1") == 2


def _metadata() -> EventMetadata:
    return EventMetadata(
        source="casetrail/test",
        actor=WORKER,
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
    )
