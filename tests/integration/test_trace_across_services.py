"""One trace from a command to every projection it caused, across two services over real
Kafka and PostgreSQL: intake records a case (gRPC span, trace context stored beside the
event), its outbox relay publishes it with ``ce_traceparent``, and coordination's projection
applies it in a span that is a child of intake's.

Both services run in this test process (the distributed backend, as separate processes use
it) so that one in-memory span exporter sees the spans of both.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, ensure_topics
from casetrail_platform.infrastructure import Infrastructure
from cli.rpc import command, connect, eventually, query
from cli.walk.story import COORDINATOR, RECEPTIONIST
from services.runner import start_services, stop_services
from tests.support.cases import registration
from tests.support.distributed import fresh_database, fresh_topic
from tests.support.identity import TestIssuer
from tests.support.servers import kafka_bootstrap
from tests.support.tracing import traced

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

SERVICES = ("intake", "coordination")


async def test_one_trace_spans_the_command_and_the_projection_it_caused(tmp_path: Path) -> None:
    issuer = TestIssuer()
    trace_id = uuid.uuid4().hex
    caller = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    try:
        async with fresh_database() as dsn, fresh_topic() as topic:
            kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap())
            await ensure_topics(kafka, TopicSettings(case_events_topic=topic))
            infra = Infrastructure.distributed(
                tmp_path, dsn, kafka, topic, verifier=issuer.verifier()
            )
            with traced() as spans:
                running = await start_services(
                    infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0)
                )
                try:
                    addresses = {s.name: f"127.0.0.1:{s.port}" for s in running}
                    # Stubs want every service's address; the others are never called.
                    everyone = dict.fromkeys(("planning", "audit"), "127.0.0.1:9") | addresses
                    async with connect(everyone, issuer.tokens) as connection:
                        intake = connection.as_(RECEPTIONIST).intake
                        client = await intake.RegisterClient(registration())
                        opened = await intake.OpenCase(
                            intake_pb2.OpenCaseRequest(
                                context=command(uuid.uuid4().hex),
                                client_id=client.client_id,
                                referral_source=intake_pb2.ReferralSource(kind="self"),
                                presenting_needs=[intake_pb2.PresentingNeed(category="housing")],
                            ),
                            metadata=(("traceparent", caller),),
                        )
                        coordination = connection.as_(COORDINATOR).coordination
                        request = co.GetCaseCoordinationRequest(
                            context=query("coordination"), case_id=opened.result.case_id
                        )
                        await eventually(
                            lambda: coordination.GetCaseCoordination(request),
                            lambda case: "housing" in case.needs,
                            what="coordination to learn the case",
                            patience=90.0,
                        )
                finally:
                    await stop_services(running)
            finished = spans.get_finished_spans()
    finally:
        issuer.stop()

    ours = [s for s in finished if format(s.context.trace_id, "032x") == trace_id]
    command_spans = [s for s in ours if s.name == "/casetrail.intake.v1.IntakeService/OpenCase"]
    assert len(command_spans) == 1, [s.name for s in ours]
    opened_span = command_spans[0]
    assert opened_span.parent is not None
    assert format(opened_span.parent.span_id, "016x") == caller.split("-")[2]
    projected = [s for s in ours if s.name == "casetrail.project case-facts-v3"]
    assert projected, [s.name for s in ours]
    assert all(s.parent is not None for s in projected)
    assert {s.parent.span_id for s in projected if s.parent} == {opened_span.context.span_id}
    assert {s.attributes["casetrail.event_type"] for s in projected if s.attributes} >= {
        "casetrail.case.opened"
    }
