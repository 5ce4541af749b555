"""A case's view names none of the client's other cases its caller may not take the same view
of: the client's erasure, shown in each of the client's cases, names all of them
(``ClientErased.case_ids``), and that the client has case B is what FindCasesOfClient decides
and records (``queries.NamedOthers``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.ledger.export import (
    CHECKPOINT_ATTRIBUTE,
    PENDING_ATTRIBUTE,
    PROOF_ATTRIBUTE,
    canonical_of_record,
)
from casetrail_platform.ledger.export_check import verify_export
from casetrail_platform.policy.guard import REDACTED_KEY
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import RecordAccessDenied, RecordAccessed, RecordSection
from events.catalog.erasure import ClientErased
from events.catalog_registry import default_registry
from events.cloudevents import from_structured
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from services.audit.adapters.timeline import ClientTrailProjection, TimelineProjection
from services.audit.app.queries import AuditDeps
from services.audit.domain.others import OTHER_CASES_PATH
from services.audit.entrypoints.grpc_server import AuditServicer
from services.audit.entrypoints.responses import REDACTED_ATTRIBUTE
from services.console.pages import TimelineRow
from tests.unit.audit.serving import audit_server
from tests.unit.audit.support import (
    CASE,
    CLIENT,
    DAY,
    T0,
    TEAM,
    Producer,
    client_history,
    intake,
    late_recorded_case,
    opened,
    viewer,
)
from tests.unit.audit.unsigned_ledger import unsigned_ledger

OTHER = "case-0099-substance"
"""Another case of the client: opened, assigned to no team (its supervisor is no one's)."""


@pytest.fixture
async def erased(read_models: SqliteReadModelStore) -> RecordedEvent:
    desk = Producer("casetrail/intake", f"client-{CLIENT}")
    history = client_history()
    desk.sequence = len(history)
    erasure = desk.record(
        ClientErased(client_id=CLIENT, case_ids=(CASE, OTHER), request_reference="dsr-1"),
        occurred_at=T0 + 8 * DAY,
    )
    other = intake(OTHER).record(opened(OTHER), occurred_at=T0 + DAY)
    events = [*late_recorded_case(), other, *history, erasure]
    for projection in (TimelineProjection(), ClientTrailProjection()):
        handler = BusProjectionHandler(read_models, projection, service="audit")
        for recorded in events:
            await handler(recorded)
    return erasure


def supervisor() -> Any:
    return viewer("supervisor", "supervision", team=TEAM)


async def _timeline(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, context: Any, leaves: bool = True
) -> tuple[audit_pb2.TimelineEntry, dict[str, str]]:
    call = audit.GetTimeline(
        audit_pb2.GetTimelineRequest(
            context=context, case_id=CASE, include_ledger_leaves=leaves, page_size=100
        )
    )
    page = await call
    [entry] = [e for e in page.entries if e.event_type == ClientErased.event_type]
    return entry, dict(await call.trailing_metadata())


async def _export(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, context: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    call = audit.ExportCase(audit_pb2.ExportCaseRequest(context=context, case_id=CASE))
    text = b"".join([chunk.json_lines async for chunk in call]).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    [line] = [line for line in lines if line["type"] == ClientErased.event_type]
    return line, dict(await call.trailing_metadata())


async def _recorded(store: SqliteEventStore) -> list[tuple[str, str]]:
    return [
        (type(r.event).__name__, r.subject)
        for r in await store.read_all(0)
        if isinstance(r.event, RecordAccessed | RecordAccessDenied)
    ]


async def test_a_supervisor_s_timeline_and_export_withhold_the_client_s_other_case(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore, erased: RecordedEvent
) -> None:
    entry, trailer = await _timeline(audit, supervisor())
    shown = json.loads(entry.cloudevent_json)
    assert shown["data"]["case_ids"] == [CASE]
    assert OTHER not in entry.SerializeToString().decode("utf-8", "replace")
    assert entry.summary.endswith("(1 case(s))")
    # The stored event's canonical bytes would name the other case: no leaf for this entry,
    # which says it is shown in part (the console's integrity check then says so, not FAILED).
    assert (entry.ledger_leaf, entry.shown_in_part) == (b"", True)
    assert TimelineRow.of(entry).shown_in_part
    assert trailer[REDACTED_KEY] == OTHER_CASES_PATH
    # The other case is decided as the view was: refused (no relationship), and recorded so.
    assert ("RecordAccessDenied", OTHER) in await _recorded(store)
    accessed = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessed)]
    assert accessed[-1].subject == CASE
    assert accessed[-1].redacted_fields == (OTHER_CASES_PATH,)

    line, trailer = await _export(audit, supervisor())
    assert line["data"]["case_ids"] == [CASE]
    assert OTHER not in json.dumps(line)
    assert line[REDACTED_ATTRIBUTE] == OTHER_CASES_PATH
    assert not {PROOF_ATTRIBUTE, CHECKPOINT_ATTRIBUTE, PENDING_ATTRIBUTE} & line.keys()
    assert trailer[REDACTED_KEY] == OTHER_CASES_PATH

    activities = await audit.WhoDidWhat(
        audit_pb2.WhoDidWhatRequest(context=supervisor(), case_id=CASE)
    )
    [erasure] = [a for a in activities.activities if a.event_type == ClientErased.event_type]
    assert erasure.summary.endswith("(1 case(s))")


async def test_an_auditor_who_may_read_the_other_case_sees_it_recorded_and_verifiable(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    store: SqliteEventStore,
    registry: EventRegistry,
    erased: RecordedEvent,
) -> None:
    entry, trailer = await _timeline(audit, viewer())
    assert json.loads(entry.cloudevent_json)["data"]["case_ids"] == [CASE, OTHER]
    assert (entry.ledger_leaf, entry.shown_in_part) == (canonical_of_record(erased), False)
    assert REDACTED_KEY not in trailer
    accessed = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessed)]
    [told] = [a for a in accessed if a.subject == OTHER]
    assert told.sections == (RecordSection.IDENTITY,)

    line, trailer = await _export(audit, viewer())
    assert REDACTED_ATTRIBUTE not in line
    assert REDACTED_KEY not in trailer
    # The line is the stored event: its leaf is recomputed from it (what `casetrail verify`
    # checks the proof from).
    assert canonical_of_record(from_structured(line, registry)) == canonical_of_record(erased)


async def test_a_supervisor_s_export_passes_verify_its_withheld_line_vouched_for_by_audit(
    deps: AuditDeps, issuer: Any, store: SqliteEventStore, tmp_path: Any, erased: RecordedEvent
) -> None:
    ledger_deps, key = await unsigned_ledger(store, tmp_path)
    async with audit_server(AuditServicer(deps, ledger_deps), issuer) as audit:
        call = audit.ExportCase(audit_pb2.ExportCaseRequest(context=supervisor(), case_id=CASE))
        text = b"".join([chunk.json_lines async for chunk in call]).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    [line] = [line for line in lines if line["type"] == ClientErased.event_type]
    assert line["data"]["case_ids"] == [CASE]
    assert line[REDACTED_ATTRIBUTE] == OTHER_CASES_PATH

    result = verify_export(text, default_registry(), {key.name: key})
    assert result.problems == []
    assert result.extent is not None
    assert (result.withheld, result.pending, result.verified) == (1, len(lines) - 1, 0)
    assert result.only_pending

    # The line changed (the other case put back) is no longer the line audit vouched for.
    number = lines.index(line) + 1
    line["data"]["case_ids"] = [CASE, OTHER]
    edited = "".join(json.dumps(each) + "\n" for each in lines)
    result = verify_export(edited, default_registry(), {key.name: key})
    assert [p for p in result.problems if p.startswith(f"line {number}:")] == [
        f"line {number}: event {line['id']} marked {REDACTED_ATTRIBUTE}, but it is not the line"
        f" audit's statement names withheld (sequence {erased.sequence} of stream"
        f" {erased.stream} of intake): it was changed"
    ]
