"""The size bound applies to an event as it is stored and published: its data with the
sensitive values sealed (several times the bytes of their text) and its CloudEvents headers.
Both event stores refuse a bigger one before writing anything, so whatever they accept fits a
Kafka record as well as the in-process bus."""

from __future__ import annotations

import pytest

from casetrail_platform.limits import MAX_EVENT_BYTES
from casetrail_platform.store.port import NO_STREAM, EventStore
from events.cloudevents import to_kafka_binary
from events.errors import InvalidEventError
from events.registry import EventRegistry
from tests.support.sample_events import note

Sealed = tuple[EventStore, EventRegistry, object]


def _published_bytes(record: object) -> int:
    kafka = to_kafka_binary(record)  # type: ignore[arg-type]
    return (
        len(kafka.value or b"")
        + len(kafka.key or b"")
        + sum(len(name) + len(value) for name, value in kafka.headers)
    )


async def test_an_event_that_fits_only_unsealed_is_refused_and_nothing_is_written(
    sealed: Sealed,
) -> None:
    store, _, _ = sealed
    text = "x" * 200_000  # 200 KB of text; sealed, its base64 alone takes 267 KB

    with pytest.raises(InvalidEventError) as raised:
        await store.append("case-1", [note("1"), note("1", text)], NO_STREAM)

    [problem] = raised.value.problems
    assert problem.field == "request"
    assert "as stored and published" in problem.problem
    assert f"at most {MAX_EVENT_BYTES}" in problem.problem
    assert text not in str(raised.value)
    assert await store.last_position() == 0


async def test_what_the_store_accepts_is_published_within_the_bound(
    sealed: Sealed,
) -> None:
    store, _, _ = sealed
    [small, large] = await store.append("case-1", [note("1"), note("1", "y" * 150_000)], NO_STREAM)

    assert _published_bytes(small) < 2_000
    assert 200_000 < _published_bytes(large) <= MAX_EVENT_BYTES
    [read_back] = await store.read_stream("case-1", from_version=2)
    assert _published_bytes(read_back) <= MAX_EVENT_BYTES
