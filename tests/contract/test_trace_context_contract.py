"""Every event store keeps the trace context of the command that appended an event beside the
event, hands it to the outbox relay (``read_all``), and keeps it out of the event itself."""

from __future__ import annotations

from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.telemetry import tracing
from events.cloudevents import to_kafka_binary
from tests.contract.conftest import StoreOpener
from tests.support.sample_events import note
from tests.support.tracing import traced


async def test_read_all_carries_the_appending_commands_trace_context(
    open_store: StoreOpener,
) -> None:
    store = await open_store()
    with traced(), tracing.server_span("/casetrail.test.v1.Test/Write", None):
        traceparent = tracing.current_traceparent()
        appended = await store.append("case-1", [note("1", "a"), note("1", "b")], NO_STREAM)
    untraced = await store.append("case-1", [note("1", "c")], 2)
    assert traceparent is not None

    stored = await store.read_all(0, 10)

    assert [r.trace_parent for r in stored] == [traceparent, traceparent, None]
    assert stored[:2] == appended  # no part of the event or its equality
    assert stored[2] == untraced[0]
    headers = dict(to_kafka_binary(stored[0]).headers)
    assert headers["ce_traceparent"] == traceparent.encode()
    assert "ce_traceparent" not in dict(to_kafka_binary(stored[2]).headers)


async def test_tracing_off_stores_no_trace_context(open_store: StoreOpener) -> None:
    store = await open_store()
    tracing.disable_tracing()
    with tracing.server_span("/casetrail.test.v1.Test/Write", None):
        await store.append("case-2", [note("2", "a")], NO_STREAM)
    assert [r.trace_parent for r in await store.read_all(0, 10)] == [None]
