"""`casetrail verify` holds an export's lines to the order audit exports them in: each stream's
lines by one clock (when they occurred, or when they were recorded), the same for every
stream. Each line proves its own event, so lines swapped (a case's reopening before its
opening) verified. Not by sequence alone: on the occurred clock a late write-up comes before
the events of its stream dated after it, and such an export verifies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from casetrail_platform.ledger.note import origin_of
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from events.catalog.cases import CaseReopened
from events.catalog.clients import ClientRegistered, PersonName
from events.catalog.erasure import RetentionHoldPlaced, RetentionHoldReleased
from events.envelope import RecordedEvent
from services.audit.adapters.timeline import TimelineProjection
from services.audit.app import queries
from services.audit.app.queries import AuditDeps
from services.audit.domain.history import TimeBasis
from tests.support.exported import verified_export
from tests.unit.audit.support import AUDITOR, CASE, CLIENT, DAY, T0, Producer, closed, opened

INTAKE = origin_of("agency", "intake")


async def late_closure(read_models: SqliteReadModelStore) -> list[RecordedEvent]:
    """Intake's case stream: opened, closed (written up a week late, dated an hour after the
    opening), reopened; as audit received it."""
    desk = Producer("casetrail/intake", f"case-{CASE}")
    log = [
        desk.record(opened(), occurred_at=T0, recorded_at=T0),
        desk.record(CaseReopened(case_id=CASE, reason="moved back"), occurred_at=T0 + 2 * DAY),
        desk.record(closed(), occurred_at=T0 + timedelta(hours=1), recorded_at=T0 + 7 * DAY),
    ]
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for recorded in log:
        await handler(recorded)
    return log


@pytest.mark.parametrize(
    ("basis", "sequences"), [(TimeBasis.OCCURRED, [1, 3, 2]), (TimeBasis.RECORDED, [1, 2, 3])]
)
async def test_an_export_on_either_clock_verifies_a_late_write_up_where_audit_puts_it(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    tmp_path: Path,
    basis: TimeBasis,
    sequences: list[int],
) -> None:
    log = await late_closure(read_models)
    case_export = await queries.export_case(deps, AUDITOR, CASE, basis)
    exported = [recorded async for page in case_export.pages for recorded in page]
    assert [recorded.sequence for recorded in exported] == sequences

    result = await verified_export(tmp_path, INTAKE, log, exported)

    assert (result.ok, result.problems) == (True, [])


async def test_a_streams_lines_swapped_fail_naming_them(
    deps: AuditDeps, read_models: SqliteReadModelStore, tmp_path: Path
) -> None:
    log = await late_closure(read_models)
    case_export = await queries.export_case(deps, AUDITOR, CASE, TimeBasis.RECORDED)
    opening, reopening, closure = [r async for page in case_export.pages for r in page]

    result = await verified_export(tmp_path, INTAKE, log, [reopening, opening, closure])

    assert not result.ok
    assert result.verified == 3  # every line still proves its event
    assert result.problems == [
        f"line 2: sequence 1 of stream case-{CASE} of casetrail/intake comes after sequence 2"
        " (line 1): out of the order of when they occurred and of when they were recorded, the"
        " orders an export follows (lines were reordered)"
    ]


def one_log(streams: list[RecordedEvent]) -> list[RecordedEvent]:
    """The events of several streams of one service, at positions 1, 2, … of its log."""
    return [
        RecordedEvent(
            event_id=r.event_id,
            stream=r.stream,
            sequence=r.sequence,
            position=position,
            recorded_at=r.recorded_at,
            event=r.event,
            metadata=r.metadata,
        )
        for position, r in enumerate(streams, 1)
    ]


async def test_streams_each_in_another_clocks_order_fail_naming_their_lines(
    tmp_path: Path,
) -> None:
    """The case's stream in the order of when its events occurred, its client's in the order
    of when theirs were recorded: each stream alone is in an order audit exports, the two
    together in none."""
    case_desk = Producer("casetrail/intake", f"case-{CASE}")
    client_desk = Producer("casetrail/intake", f"client-{CLIENT}")
    registered = ClientRegistered(client_id=CLIENT, name=PersonName(given_names="Marco"))
    held = RetentionHoldPlaced(client_id=CLIENT, hold_id="hold-1", legal_basis="inquiry 7")
    released = RetentionHoldReleased(client_id=CLIENT, hold_id="hold-1", reason="closed")
    case = [
        case_desk.record(opened(), occurred_at=T0),
        case_desk.record(CaseReopened(case_id=CASE, reason="moved back"), occurred_at=T0 + DAY),
        case_desk.record(closed(), occurred_at=T0 + timedelta(hours=1), recorded_at=T0 + 7 * DAY),
    ]
    client = [
        client_desk.record(registered, occurred_at=T0 - DAY),
        client_desk.record(held, occurred_at=T0 + 2 * DAY),
        client_desk.record(released, occurred_at=T0 + DAY, recorded_at=T0 + 5 * DAY),
    ]
    log = one_log([*client, *case])
    by_occurred = [log[3], log[5], log[4]]  # the case: opened, closed, reopened
    by_recorded = [log[0], log[1], log[2]]  # the client: registered, held, released

    result = await verified_export(tmp_path, INTAKE, log, [*by_recorded, *by_occurred])

    assert not result.ok
    assert result.problems == [
        f"line 3: sequence 3 of stream client-{CLIENT} of casetrail/intake comes after sequence"
        " 2 (line 2), out of the order of when they occurred, and line 6: sequence 2 of stream"
        f" case-{CASE} of casetrail/intake comes after sequence 3 (line 5), out of the order of"
        " when they were recorded: an export follows one of them (lines were reordered)"
    ]
