"""GetCase's lists that grow each time a case is closed and reopened (its assessments,
closures and reopenings) are cut to what one gRPC answer carries (README, "Answers are
bounded"): past gRPC's 4 MiB the answer never reaches the caller, after the read was recorded,
so the case could never be read again."""

from __future__ import annotations

from casetrail.intake.v1 import intake_pb2
from services.intake.entrypoints.to_proto import (
    CASE_ASSESSMENTS,
    CASE_CLOSURES,
    CASE_REOPENINGS,
    cut_case_record,
)
from tests.unit.intake.requests import assessing, command, get_case, open_case
from tests.unit.intake.support import Intake, closed_by_planning

GRPC_ANSWER_BYTES = 4 * 1024 * 1024
WIDE = "\U0001f600"
"""Four bytes in UTF-8: the most a character of a text takes in an answer."""


def large_assessment(case_id: str) -> intake_pb2.RecordInitialAssessmentRequest:
    request = assessing(case_id)
    request.factors.psychosocial = WIDE * 15_000
    request.factors.biological = WIDE * 15_000
    request.factors.cultural = WIDE * 15_000
    return request


async def test_a_case_reopened_again_and_again_is_still_read(intake: Intake) -> None:
    case_id = await open_case(intake)
    await intake.stub.RecordInitialAssessment(large_assessment(case_id))
    assert intake.infra.inprocess_bus is not None
    publisher = intake.infra.inprocess_bus.publisher(intake.infra.topic)
    cycles = 16
    for cycle in range(1, cycles + 1):
        # ReopenCase waits for intake's closures to hold the closure on the bus.
        await publisher.publish([closed_by_planning(case_id, sequence=cycle)])
        await intake.stub.ReopenCase(
            intake_pb2.ReopenCaseRequest(
                context=command("coordinator"), case_id=case_id, reason=WIDE * 19_000
            )
        )
        await intake.stub.RecordInitialAssessment(large_assessment(case_id))

    record = await get_case(intake, case_id)

    assert (record.assessments_total, record.assessments_truncated) == (cycles + 1, True)
    assert (record.reopenings_total, record.reopenings_truncated) == (cycles, True)
    assert (record.closures_total, record.closures_truncated) == (cycles, False)
    assert len(record.closures) == cycles
    # The latest ones, still oldest first: the last one is the current assessment.
    listed = len(record.assessments)
    assert 0 < listed < cycles + 1
    last_reopened = record.reopenings[-1].reopened_at.ToDatetime()
    assert record.assessments[-1].recorded_at.ToDatetime() >= last_reopened
    assert record.ByteSize() < GRPC_ANSWER_BYTES


def test_each_list_is_cut_to_its_latest_within_its_caps() -> None:
    record = intake_pb2.CaseRecord(
        assessments=[
            intake_pb2.InitialAssessment(assessment_id=f"a{n}", strengths=[WIDE * 60_000])
            for n in range(20)
        ],
        reopenings=[intake_pb2.Reopening(reason=f"{n}" + WIDE * 19_000) for n in range(40)],
        closures=[intake_pb2.Closure(reason=f"{n}") for n in range(CASE_CLOSURES.listed + 5)],
    )

    cut_case_record(record)

    assert record.ByteSize() < GRPC_ANSWER_BYTES
    assessments = [a.assessment_id for a in record.assessments]
    assert assessments == [f"a{n}" for n in range(20 - len(assessments), 20)]
    assert (record.assessments_total, record.assessments_truncated) == (20, True)
    assert sum(a.ByteSize() for a in record.assessments) <= CASE_ASSESSMENTS.size
    assert record.reopenings[-1].reason.startswith("39")
    assert (record.reopenings_total, record.reopenings_truncated) == (40, True)
    assert sum(r.ByteSize() for r in record.reopenings) <= CASE_REOPENINGS.size
    assert len(record.closures) == CASE_CLOSURES.listed
    assert record.closures[0].reason == "5"
    assert (record.closures_total, record.closures_truncated) == (CASE_CLOSURES.listed + 5, True)
