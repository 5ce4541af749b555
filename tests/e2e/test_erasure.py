"""Erasure end to end on both backends (issue 10 item 3): a canary written into sensitive
fields of three services is gone after EraseClient from every file, database dump, Kafka topic
(dead-letter topics included), read model, log and export; non-sensitive history remains; the
ledger's proofs are the same; a retention hold refuses the erasure naming itself."""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2 as co
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2 as pl
from casetrail_platform.ledger.export import PROOF_ATTRIBUTE
from cli.rpc import Person, command, eventually, query, timestamp
from cli.walk.story import (
    AUDITOR,
    COORDINATOR,
    HOME_CARE_PROGRAM,
    INTAKE_WORKER,
    RECEPTIONIST,
    SOCIAL_WORKER,
)
from events.sealed_values import ERASED_CODE, ERASED_TEXT
from tests.e2e.conftest import Casetrail
from tests.e2e.exports import proven_export
from tests.e2e.support import Case, casetrail_cli, consent
from tests.support.cases import key, registration
from tests.support.kafka_reading import partitions_of, records_to_end

pytestmark = pytest.mark.asyncio(loop_scope="package")

SUPERVISOR = Person("dpo-erin-walsh", "supervisor")
REVIEW = "confidentiality_review"
CORRECTED_BIRTH = "1931-02-27"
"""A date nothing else in the run holds: found in a file, it is the client's."""
CLIENT_EVENT_TYPES = (
    "casetrail.client.registered",
    "casetrail.client.date_of_birth_corrected",
    "casetrail.client.retention_hold_placed",
    "casetrail.client.retention_hold_released",
)
"""The client's own events the case's timeline and export show (and, after, its erasure)."""


async def test_an_erased_client_leaves_no_sensitive_trace_and_history_still_verifies(
    casetrail: Casetrail, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = f"CANARY-{uuid.uuid4().hex}"
    stubs = casetrail.stubs
    # Who the client is (personal data) carries the canary too: an erasure forgets it as well.
    person = registration(family_name=canary)
    person.identifiers[0].value = f"ID-{canary}"
    person.contact.postal_address = f"Via {canary} 12, Milano"
    client = await stubs.as_(RECEPTIONIST).intake.RegisterClient(person)
    opened = await stubs.as_(RECEPTIONIST).intake.OpenCase(
        intake_pb2.OpenCaseRequest(
            context=command(key()),
            client_id=client.client_id,
            # Who referred the client names someone close to them (personal: case.opened v3).
            referral_source=intake_pb2.ReferralSource(kind="family", name=f"Daughter {canary}"),
            presenting_needs=[intake_pb2.PresentingNeed(category="counseling", description=canary)],
        )
    )
    case_id = opened.result.case_id
    await stubs.as_(INTAKE_WORKER).intake.RecordInitialAssessment(
        intake_pb2.RecordInitialAssessmentRequest(
            context=command(key()),
            case_id=case_id,
            factors=intake_pb2.AssessmentFactors(
                psychological=canary, social=f"Lives alone, {canary}"
            ),
            strengths=[f"Plays chess every week, {canary}"],
            resources=[f"State pension, {canary}"],
            needs=[intake_pb2.AssessedNeed(category="counseling", urgency="soon")],
        )
    )
    await _assigned_with_a_plan(casetrail, case_id, canary)
    # Named sensitive categories of a consent, a service's place and why it moved or was called
    # off, a discharge's criteria and aftercare: sealed too (rev21), so erased with the rest.
    consent_id = await consent(
        casetrail, Case(client.client_id, case_id), "agency-harbour", categories=("substance_use",)
    )
    # A consent to a person the client names, and where its signed form is kept: personal
    # (consent.granted v4), so erased with the rest.
    await stubs.as_(SOCIAL_WORKER).intake.GrantConsent(
        intake_pb2.GrantConsentRequest(
            context=command(key()),
            case_id=case_id,
            recipient=intake_pb2.ConsentRecipient(
                kind="person", recipient_id="person-daughter", name=f"Anna {canary}"
            ),
            purpose="coordination",
            scope=["services"],
            expires_at=timestamp(datetime.now(UTC) + timedelta(days=90)),
            document_reference=f"scan://consents/{canary}.pdf",
        )
    )
    # Why the client withdrew it (sensitive), and an eligibility decision's reasons stating
    # their age and income (personal): sealed since rev21's second batch.
    await stubs.as_(SOCIAL_WORKER).intake.RevokeConsent(
        intake_pb2.RevokeConsentRequest(
            context=command(key()),
            case_id=case_id,
            consent_id=consent_id,
            reason=f"Revoked: {canary}",
        )
    )
    decided = await eventually(
        lambda: stubs.as_(SOCIAL_WORKER).coordination.DetermineEligibility(
            co.DetermineEligibilityRequest(
                context=command(key()),
                case_id=case_id,
                program_id=HOME_CARE_PROGRAM,
                facts=co.EligibilityFacts(
                    monthly_income=co.Money(amount_minor_units=185_000, currency="USD"),
                    household_size=1,
                    residence="us-ca-alameda",
                ),
            )
        ),
        what="coordination to learn the client's date of birth",
        patience=casetrail.patience,
        retry=lambda refusal: refusal.reason == "CLIENT_AGE_NOT_KNOWN",
    )
    assert decided.reasons
    assert ERASED_TEXT not in decided.reasons
    # A corrected date of birth and why (personal: client.date_of_birth_corrected), forgotten
    # too: the date is a canary of its own, in clear in intake's directory and coordination's
    # birth dates until the erasure reaches them.
    await stubs.as_(COORDINATOR).intake.CorrectClientDateOfBirth(
        intake_pb2.CorrectClientDateOfBirthRequest(
            context=command(key()),
            client_id=client.client_id,
            date_of_birth=CORRECTED_BIRTH,
            reason=f"Identity card seen, {canary}",
        )
    )
    await _services_moved_and_called_off(casetrail, case_id, canary)
    await stubs.as_(SOCIAL_WORKER).planning.PlanDischarge(
        pl.PlanDischargeRequest(
            context=command(key()),
            case_id=case_id,
            target_date=(datetime.now(UTC).date() + timedelta(days=60)).isoformat(),
            criteria=[f"Criterion {canary}"],
            aftercare=[f"Aftercare {canary}"],
        )
    )
    await eventually(
        lambda: _timeline_text(casetrail, case_id),
        lambda text: all(
            kind in text
            for kind in (
                "casetrail.consent.granted",
                "casetrail.consent.revoked",
                "casetrail.eligibility.determined",
                "casetrail.service.rescheduled",
                "casetrail.service.cancelled",
                "casetrail.discharge.planned",
            )
        ),
        what="audit to hold the consent, the services and the discharge",
        patience=casetrail.patience,
    )
    # An entitled reader (the auditor's review) still reads them as written.
    entitled = await eventually(
        lambda: stubs.as_(AUDITOR).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query(REVIEW), case_id=case_id)
        ),
        lambda view: list(view.discharge.criteria) == [f"Criterion {canary}"],
        what="planning's case view to show the discharge",
        patience=casetrail.patience,
    )
    assert list(entitled.discharge.aftercare) == [f"Aftercare {canary}"]
    assert entitled.plan.goals[0].goal.tasks[0].description == f"Task {canary}"
    opened_event = opened.result.event_ids[0]
    before = await eventually(
        lambda: stubs.as_(AUDITOR).audit.ProveEventInclusion(
            audit_pb2.ProveEventInclusionRequest(context=query(REVIEW), event_id=opened_event)
        ),
        what="audit to prove the case's opening",
        patience=casetrail.patience,
        retry=lambda refusal: (
            refusal.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
        ),
    )
    opened_record = await _intake_case(casetrail, case_id)
    assert canary in opened_record.presenting_needs[0].description
    assert opened_record.referral_source.name == f"Daughter {canary}"
    assert (await _intake_client(casetrail, client.client_id)).name.family_name == canary

    # Coordination keeps the client's schedule folded (kinds and addresses opened in it).
    schedule = await _schedule(casetrail, client.client_id)
    assert {service.location.address for service in schedule.services} == {f"Via {canary} 3"}

    # A retention hold refuses the erasure, naming itself; released, the erasure goes ahead.
    # Its legal basis and why it was released tell of the client's circumstances: personal
    # (retention_hold_placed/released v2), sealed and erased with the rest.
    held = await stubs.as_(SUPERVISOR).intake.PlaceRetentionHold(
        intake_pb2.PlaceRetentionHoldRequest(
            context=command(key()),
            client_id=client.client_id,
            legal_basis=f"inquiry 2026-17 {canary}",
        )
    )
    erase = intake_pb2.EraseClientRequest(
        context=command(key()), client_id=client.client_id, request_reference="dms://dsr/41"
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.as_(SUPERVISOR).intake.EraseClient(erase)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert held.hold_id in (refused.value.details() or "")
    await stubs.as_(SUPERVISOR).intake.ReleaseRetentionHold(
        intake_pb2.ReleaseRetentionHoldRequest(
            context=command(key()),
            client_id=client.client_id,
            hold_id=held.hold_id,
            reason=f"Inquiry closed {canary}",
        )
    )
    # The auditor replaying the case sees the client's own history in it, its personal values
    # sealed as the case's own events' are (as stored, published and exported).
    replayed = await eventually(
        lambda: _timeline_text(casetrail, case_id),
        lambda text: all(kind in text for kind in CLIENT_EVENT_TYPES),
        what="audit to show the client's own events in the case's timeline",
        patience=casetrail.patience,
    )
    assert f"corrected the date of birth of client {client.client_id}" in replayed
    assert f"placed retention hold {held.hold_id} on client {client.client_id}" in replayed
    assert CORRECTED_BIRTH not in replayed
    erased = await stubs.as_(SUPERVISOR).intake.EraseClient(erase)
    assert list(erased.erased_case_ids) == [case_id]
    assert (await stubs.as_(SUPERVISOR).intake.EraseClient(erase)).result == erased.result

    # Sensitive values read as erased everywhere; the rest of the history stays.
    record = await _intake_case(casetrail, case_id)
    assert record.presenting_needs[0].description == ERASED_TEXT
    who = await _intake_client(casetrail, client.client_id)
    assert (who.name.given_names, who.name.family_name) == (ERASED_TEXT, ERASED_TEXT)
    assert (who.date_of_birth, list(who.identifiers), who.HasField("contact")) == ("", [], False)
    assert who.client_id == client.client_id
    assert record.presenting_needs[0].category == ERASED_CODE
    assert record.assessments[0].factors.psychological == ERASED_TEXT
    # The assessment's strengths are personal (the client's private life): erased too.
    assert list(record.assessments[0].strengths) == [ERASED_TEXT]
    assert list(record.assessments[0].resources) == [ERASED_TEXT]
    assert record.assessments[0].factors.social == ERASED_TEXT
    assert record.referral_source.kind == "family"
    assert record.referral_source.name == ERASED_TEXT
    view = await eventually(
        lambda: stubs.as_(AUDITOR).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query(REVIEW), case_id=case_id)
        ),
        lambda view: view.plan.goals[0].goal.statement == ERASED_TEXT,
        what="planning's case view to forget the goal",
        patience=casetrail.patience,
    )
    assert view.plan.goals[0].goal.tasks[0].description == ERASED_TEXT
    assert list(view.discharge.criteria) == [ERASED_TEXT]
    assert list(view.discharge.aftercare) == [ERASED_TEXT]
    assert view.worker.worker_id == SOCIAL_WORKER.user_id
    # Each consumer group applies the erasure in its own time: the case facts (needs) and the
    # case's folded state (the eligibility decision's reasons) are two.
    coordinated = await eventually(
        lambda: stubs.as_(AUDITOR).coordination.GetCaseCoordination(
            co.GetCaseCoordinationRequest(context=query(REVIEW), case_id=case_id)
        ),
        lambda case: (
            set(case.needs) == {ERASED_CODE} and case.eligibility[0].reasons[0] == ERASED_TEXT
        ),
        what="coordination's case facts and state to forget the needs and the reasons",
        patience=casetrail.patience,
    )
    [eligibility] = coordinated.eligibility
    assert list(eligibility.reasons) == [ERASED_TEXT] * len(decided.reasons)
    # The kept schedule went with the client's keys: read again from the stream, erased.
    schedule = await _schedule(casetrail, client.client_id)
    assert {service.location.address for service in schedule.services} == {ERASED_TEXT}
    assert {service.kind for service in schedule.services} == {ERASED_CODE}

    # The ledger: the same proof at the same size, and an export that verifies offline.
    after = await stubs.as_(AUDITOR).audit.ProveEventInclusion(
        audit_pb2.ProveEventInclusionRequest(
            context=query(REVIEW), event_id=opened_event, tree_size=before.checkpoint.tree_size
        )
    )
    assert (after.leaf_hash, list(after.proof)) == (before.leaf_hash, list(before.proof))
    assert after.checkpoint.root_hash == before.checkpoint.root_hash
    export = await _export(casetrail, case_id, tmp_path)
    assert canary not in export.read_text()
    # Nor a category the client's consent named: the consent stays, naming none.
    assert "substance_use" not in export.read_text()
    # The erasure takes its place in the timeline; what it erased reads erased there.
    timeline = await eventually(
        lambda: _timeline_text(casetrail, case_id),
        lambda text: "casetrail.client.erased" in text,
        what="audit to show the client's erasure in the case's timeline",
        patience=casetrail.patience,
    )
    assert all(kind in timeline for kind in CLIENT_EVENT_TYPES)
    assert CORRECTED_BIRTH not in timeline
    assert "casetrail.consent.granted" in timeline
    assert canary not in timeline
    assert "substance_use" not in timeline
    keys = await stubs.as_(AUDITOR).audit.ListLedgerKeys(
        audit_pb2.ListLedgerKeysRequest(context=query(REVIEW))
    )
    # The client's events are exported with the case's, each proved by intake's own log.
    exported = [json.loads(line) for line in export.read_text().splitlines()]
    intake_log = {k.service: k.origin for k in keys.keys}["intake"]
    for kind in CLIENT_EVENT_TYPES:
        [line] = [line for line in exported if line["type"] == kind]
        assert json.loads(line[PROOF_ATTRIBUTE])["log"] == intake_log, kind
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("".join(k.verifier_key + "\n" for k in keys.keys))
    status, out, err = await casetrail_cli("verify", str(export), "--keys", str(keys_file))
    assert status == 0, err
    storage = _storage(casetrail)
    for service in ("intake", "planning", "coordination"):
        status, out, err = await casetrail_cli("verify-store", service, *storage)
        assert status == 0, err + out
        if service == "intake":  # it signed the checkpoint of the proof above: checked
            assert " 0 checkpoints checked" not in out, out

    # Nowhere at rest: files (SQLite, logs), the database, every topic; nor in this log.
    # Read models forget in the background, each as its projection applies the erasure.
    data_dir = casetrail.data_dir
    assert data_dir is not None
    await eventually(
        lambda: asyncio.sleep(
            0,
            _files_holding(data_dir, canary.encode())
            + _files_holding(data_dir, CORRECTED_BIRTH.encode()),
        ),
        lambda holding: not holding,
        what="the read models' files to forget the canary",
        patience=casetrail.patience,
    )
    if casetrail.backend == "distributed":
        dump = await _pg_dump(casetrail.postgres_dsn)
        assert canary not in dump
        assert CORRECTED_BIRTH not in dump
        read, holding = await _topics_holding(canary.encode())
        assert casetrail.topic in read
        assert holding == {}, holding
    assert canary not in caplog.text


async def _assigned_with_a_plan(casetrail: Casetrail, case_id: str, canary: str) -> None:
    stubs = casetrail.stubs
    await eventually(
        lambda: stubs.as_(AUDITOR).coordination.GetCaseCoordination(
            co.GetCaseCoordinationRequest(context=query(REVIEW), case_id=case_id)
        ),
        lambda case: "counseling" in case.needs,
        what="coordination to learn the needs",
        patience=casetrail.patience,
    )
    await stubs.as_(COORDINATOR).coordination.AssignCase(
        co.AssignCaseRequest(
            context=command(key()), case_id=case_id, worker_id=SOCIAL_WORKER.user_id
        )
    )
    await eventually(
        lambda: stubs.as_(AUDITOR).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query(REVIEW), case_id=case_id)
        ),
        lambda view: view.worker.worker_id == SOCIAL_WORKER.user_id,
        what="planning to learn who carries the case",
        patience=casetrail.patience,
    )
    await stubs.as_(SOCIAL_WORKER).planning.DraftPlan(
        pl.DraftPlanRequest(
            context=command(key()),
            case_id=case_id,
            goals=[
                pl.Goal(
                    statement=canary,
                    term="short",
                    need_category="counseling",
                    objectives=[canary],
                    tasks=[
                        pl.Task(
                            description=f"Task {canary}",
                            owner=pl.TaskOwner(kind="worker", owner_id=SOCIAL_WORKER.user_id),
                            target_date=(datetime.now(UTC).date() + timedelta(days=7)).isoformat(),
                        )
                    ],
                )
            ],
        )
    )
    await eventually(
        lambda: stubs.as_(AUDITOR).planning.GetCaseView(
            pl.GetCaseViewRequest(context=query(REVIEW), case_id=case_id)
        ),
        lambda view: len(view.plan.goals) == 1 and view.plan.goals[0].goal.statement == canary,
        what="planning's case view to show the plan",
        patience=casetrail.patience,
    )


async def _services_moved_and_called_off(casetrail: Casetrail, case_id: str, canary: str) -> None:
    """A service at an address (personal), moved with a reason, and one called off with one."""
    coordinator = casetrail.stubs.as_(COORDINATOR).coordination
    day = datetime.now(UTC).date() + timedelta(days=7)
    start = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
    service_ids = []
    for hour in (0, 3):
        scheduled = await coordinator.ScheduleService(
            co.ScheduleServiceRequest(
                context=command(key()),
                case_id=case_id,
                kind="counseling",
                provider=co.Provider(provider_id="agency-harbour", name="Harbour Counseling"),
                starts_at=timestamp(start + timedelta(hours=hour)),
                ends_at=timestamp(start + timedelta(hours=hour + 1)),
                location=co.ServiceLocation(kind="other", address=f"Via {canary} 3"),
            )
        )
        service_ids.append(scheduled.service_id)
    await coordinator.RescheduleService(
        co.RescheduleServiceRequest(
            context=command(key()),
            case_id=case_id,
            service_id=service_ids[0],
            starts_at=timestamp(start + timedelta(hours=1)),
            ends_at=timestamp(start + timedelta(hours=2)),
            reason=f"Moved: {canary}",
        )
    )
    await coordinator.CancelService(
        co.CancelServiceRequest(
            context=command(key()),
            case_id=case_id,
            service_id=service_ids[1],
            cancelled_by="client",
            reason=f"Cancelled: {canary}",
        )
    )


async def _schedule(casetrail: Casetrail, client_id: str) -> co.GetClientScheduleResponse:
    answer: co.GetClientScheduleResponse = await casetrail.stubs.as_(
        AUDITOR
    ).coordination.GetClientSchedule(
        co.GetClientScheduleRequest(context=query(REVIEW), client_id=client_id, include_past=True)
    )
    return answer


async def _timeline_text(casetrail: Casetrail, case_id: str) -> str:
    """Audit's timeline of the case, as the auditor's review reads it (every event's JSON, and
    its summary: a consent's names its recipient)."""
    answer = await casetrail.stubs.as_(AUDITOR).audit.GetTimeline(
        audit_pb2.GetTimelineRequest(context=query(REVIEW), case_id=case_id, page_size=1000)
    )
    return "\n".join(f"{entry.summary}\n{entry.cloudevent_json}" for entry in answer.entries)


async def _intake_case(casetrail: Casetrail, case_id: str) -> intake_pb2.CaseRecord:
    answer: intake_pb2.GetCaseResponse = await casetrail.stubs.as_(AUDITOR).intake.GetCase(
        intake_pb2.GetCaseRequest(context=query(REVIEW), case_id=case_id)
    )
    return answer.record


async def _intake_client(casetrail: Casetrail, client_id: str) -> intake_pb2.Client:
    answer: intake_pb2.GetClientResponse = await casetrail.stubs.as_(AUDITOR).intake.GetClient(
        intake_pb2.GetClientRequest(context=query(REVIEW), client_id=client_id)
    )
    return answer.client


async def _export(casetrail: Casetrail, case_id: str, tmp_path: Path) -> Path:
    """The case's export once every line carries its proof."""
    lines = await proven_export(casetrail, case_id)
    assert any(line["type"] == "casetrail.initial_assessment.recorded" for line in lines)
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _storage(casetrail: Casetrail) -> list[str]:
    assert casetrail.data_dir is not None
    # The data dir holds the services' ledger keys on both backends: without it the CLI would
    # look in its default one and check the checkpoints against whatever keys lie there.
    where = ["--data-dir", str(casetrail.data_dir)]
    if casetrail.backend == "distributed":
        return [*where, "--backend", "distributed", "--pg-dsn", casetrail.postgres_dsn]
    return where


def _files_holding(directory: Path, needle: bytes) -> list[str]:
    return [
        str(path) for path in directory.rglob("*") if path.is_file() and needle in path.read_bytes()
    ]


async def _pg_dump(dsn: str) -> str:
    [pg_dump] = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1:]
    process = await asyncio.create_subprocess_exec(
        pg_dump, "--data-only", dsn, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert b"COPY" in out
    return out.decode(errors="replace")


async def _topics_holding(needle: bytes) -> tuple[set[str], dict[str, int]]:
    """Every topic on the test broker (dead-letter topics included) read from the start to
    its end: the topics read, and how many records of each hold ``needle``."""
    partitions = await partitions_of()
    found: dict[str, int] = {}
    for record in await records_to_end(partitions):
        if needle in (record.value or b"") or any(
            needle in (value or b"") for _, value in record.headers
        ):
            found[record.topic] = found.get(record.topic, 0) + 1
    return {tp.topic for tp in partitions}, found
