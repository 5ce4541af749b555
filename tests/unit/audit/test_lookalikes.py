"""A case's view names none of the clients its client looked like that its caller may not see:
the registration, shown in each of the client's cases, names them
(``ClientRegistered.confirmed_not_duplicate_of``), and each is decided as intake decides a
possible duplicate it shows (``READ_CLIENT`` on the client's cases), and recorded
(``queries.lookalikes``). On both backends, the registration's personal values sealed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.ledger.export import canonical_of_record
from casetrail_platform.ledger.export_check import verify_export
from casetrail_platform.ledger.note import Verifier
from casetrail_platform.policy.guard import REDACTED_KEY, AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.vocabulary import Action
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.store.port import EventStore
from events.catalog.access import RecordAccessDenied, RecordAccessed, RecordSection
from events.catalog.assignment import CaseAssigned
from events.catalog.base import Role
from events.catalog.clients import ClientRegistered, PersonalIdentifier, PersonName
from events.catalog_registry import default_registry
from events.envelope import RecordedEvent
from events.registry import EventRegistry, encode
from events.sealed_values import CIPHERTEXT_PREFIX
from services.audit.adapters.client_cases import ClientCasesProjection, ReadModelClientCases
from services.audit.adapters.timeline import (
    ClientTrailProjection,
    ReadModelTimelines,
    TimelineProjection,
)
from services.audit.app.queries import AuditDeps
from services.audit.domain.others import LOOKALIKES_PATH
from services.audit.entrypoints.grpc_server import AuditServicer
from services.audit.entrypoints.responses import REDACTED_ATTRIBUTE
from tests.support.backends import store_and_read_models
from tests.support.identity import TestIssuer
from tests.unit.audit.serving import audit_server
from tests.unit.audit.support import (
    CASE,
    CLIENT,
    DAY,
    T0,
    TEAM,
    Producer,
    coordination,
    intake,
    late_recorded_case,
    opened,
    viewer,
)
from tests.unit.audit.unsigned_ledger import unsigned_ledger
from tests.unit.keys.support import protected

SEEN, SEEN_CASE = "client-seen", "case-0101-seen"
"""A client who looked alike, whose case the supervisor's team carries."""
SEEN_WEST_CASE = "case-0202-seen-west"
"""The client ``SEEN``'s other case, which another team carries."""
UNSEEN, UNSEEN_CASE = "client-unseen", "case-0777-west"
"""A client who looked alike, whose case another team carries."""
LONE = "client-lone"
"""A client who looked alike, with no case."""
LOOKALIKES = [SEEN, UNSEEN, LONE]


@dataclass(frozen=True)
class Audit:
    stub: audit_pb2_grpc.AuditServiceAsyncStub
    store: EventStore
    """Audit's own store, where the accesses are recorded."""
    registered: RecordedEvent
    """The client's registration, its personal values sealed."""
    key: Verifier
    """Audit's own log key: its statements of an export's extent."""

    async def accesses(self) -> list[Any]:
        return [
            r.event
            for r in await self.store.read_all(0)
            if isinstance(r.event, RecordAccessed | RecordAccessDenied)
        ]


def _case_of(client_id: str, case_id: str, team: str) -> list[RecordedEvent]:
    assigned = CaseAssigned(
        case_id=case_id,
        worker_id=f"worker-of-{case_id}",
        worker_role=Role.SOCIAL_WORKER,
        reason="r",
        worker_team=team,
    )
    return [
        intake(case_id).record(opened(case_id).updated(client_id=client_id), occurred_at=T0),
        coordination(case_id).record(assigned, occurred_at=T0 + DAY),
    ]


def _sealed_registration(registry: EventRegistry) -> RecordedEvent:
    registration = ClientRegistered(
        client_id=CLIENT,
        name=PersonName(given_names="Marco"),
        date_of_birth=date(1941, 6, 2),
        identifiers=(PersonalIdentifier(scheme="national_id", value="BLLMRC41H02F205X"),),
        confirmed_not_duplicate_of=tuple(LOOKALIKES),
    )
    event_id = uuid4()
    recorded = Producer("casetrail/intake", f"client-{CLIENT}").record(
        registration, occurred_at=T0 - DAY, event_id=event_id
    )
    return recorded.with_data(registry.seal(registration, event_id, encode(registration)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def audit(
    request: pytest.FixtureRequest, tmp_path: Path, issuer: TestIssuer
) -> AsyncIterator[Audit]:
    registry = protected()
    async with store_and_read_models(request.param, tmp_path, registry, "audit_lookalikes") as (
        store,
        read_models,
    ):
        registered = _sealed_registration(registry)
        events = [
            *late_recorded_case(),
            registered,
            *_case_of(SEEN, SEEN_CASE, TEAM),
            *_case_of(SEEN, SEEN_WEST_CASE, "team-west"),
            *_case_of(UNSEEN, UNSEEN_CASE, "team-west"),
        ]
        for projection in (TimelineProjection(), ClientTrailProjection(), ClientCasesProjection()):
            handler = BusProjectionHandler(read_models, projection, service="audit")
            for recorded in events:
                await handler(recorded)
        deps = AuditDeps(
            ReadModelTimelines(read_models, registry),
            store,
            AccessControl(store, None, "casetrail/audit", home_agency=DEFAULT_HOME_AGENCY),
        )
        ledger_deps, key = await unsigned_ledger(store, tmp_path)
        servicer = AuditServicer(deps, ledger_deps, ReadModelClientCases(read_models))
        async with audit_server(servicer, issuer) as stub:
            yield Audit(stub, store, registered, key)


def supervisor() -> Any:
    return viewer("supervisor", "supervision", team=TEAM)


async def _timeline(audit: Audit, context: Any) -> tuple[audit_pb2.TimelineEntry, dict[str, str]]:
    call = audit.stub.GetTimeline(
        audit_pb2.GetTimelineRequest(
            context=context, case_id=CASE, include_ledger_leaves=True, page_size=100
        )
    )
    page = await call
    [entry] = [e for e in page.entries if e.event_type == ClientRegistered.event_type]
    return entry, dict(await call.trailing_metadata())


async def _export(audit: Audit, context: Any) -> tuple[str, dict[str, str]]:
    call = audit.stub.ExportCase(audit_pb2.ExportCaseRequest(context=context, case_id=CASE))
    text = b"".join([chunk.json_lines async for chunk in call]).decode()
    return text, dict(await call.trailing_metadata())


def _registration_line(text: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    [line] = [line for line in lines if line["type"] == ClientRegistered.event_type]
    return line


async def test_a_supervisor_sees_only_the_look_alike_clients_they_may_see_each_decided(
    audit: Audit,
) -> None:
    entry, trailer = await _timeline(audit, supervisor())
    data = json.loads(entry.cloudevent_json)["data"]
    assert data["confirmed_not_duplicate_of"] == [SEEN]
    # The personal values stay sealed as stored: withholding an id opens nothing.
    assert data["date_of_birth"].startswith(CIPHERTEXT_PREFIX)
    assert UNSEEN not in entry.SerializeToString().decode("utf-8", "replace")
    assert (entry.ledger_leaf, entry.shown_in_part) == (b"", True)
    assert trailer[REDACTED_KEY] == LOOKALIKES_PATH

    accesses = await audit.accesses()
    # Refused as intake refuses a candidate: under the client's first case, or the client.
    refused = {(a.subject, a.action) for a in accesses if isinstance(a, RecordAccessDenied)}
    assert refused == {(UNSEEN_CASE, Action.READ_CLIENT.value), (LONE, Action.READ_CLIENT.value)}
    [view] = [a for a in accesses if isinstance(a, RecordAccessed) and a.subject == CASE]
    assert view.redacted_fields == (LOOKALIKES_PATH,)
    [told] = [a for a in accesses if isinstance(a, RecordAccessed) and a.subject == SEEN_CASE]
    assert (told.sections, told.fields) == ((RecordSection.IDENTITY,), ("client_id",))

    text, trailer = await _export(audit, supervisor())
    line = _registration_line(text)
    assert line["data"]["confirmed_not_duplicate_of"] == [SEEN]
    assert line[REDACTED_ATTRIBUTE] == LOOKALIKES_PATH
    assert trailer[REDACTED_KEY] == LOOKALIKES_PATH
    # Audit's signed statement of the extent vouches for the line as shown.
    result = verify_export(text, default_registry(), {audit.key.name: audit.key})
    assert result.problems == []
    assert result.withheld == 1


async def test_a_look_alike_client_is_recorded_under_their_cases_the_caller_may_see_only(
    audit: Audit,
) -> None:
    """The first of the look-alike's cases allowing the caller was recorded under each of
    their cases: the other team's case showed the supervisor reading who its client is, under
    a decision its own facts refuse."""
    entry, _ = await _timeline(audit, supervisor())
    assert json.loads(entry.cloudevent_json)["data"]["confirmed_not_duplicate_of"] == [SEEN]
    subjects = {access.subject for access in await audit.accesses()}
    assert SEEN_CASE in subjects
    assert SEEN_WEST_CASE not in subjects


async def test_an_auditor_sees_every_look_alike_client_recorded_and_the_stored_line(
    audit: Audit,
) -> None:
    entry, trailer = await _timeline(audit, viewer())
    data = json.loads(entry.cloudevent_json)["data"]
    assert data["confirmed_not_duplicate_of"] == LOOKALIKES
    assert (entry.ledger_leaf, entry.shown_in_part) == (
        canonical_of_record(audit.registered),
        False,
    )
    assert REDACTED_KEY not in trailer
    accesses = await audit.accesses()
    assert not [a for a in accesses if isinstance(a, RecordAccessDenied)]
    told = {a.subject: a for a in accesses if isinstance(a, RecordAccessed)}
    for subject in (SEEN_CASE, SEEN_WEST_CASE, UNSEEN_CASE, LONE):
        assert (told[subject].sections, told[subject].fields) == (
            (RecordSection.IDENTITY,),
            ("client_id",),
        )

    text, trailer = await _export(audit, viewer())
    line = _registration_line(text)
    assert line["data"]["confirmed_not_duplicate_of"] == LOOKALIKES
    assert REDACTED_ATTRIBUTE not in line
    assert REDACTED_KEY not in trailer


async def test_without_a_client_index_every_look_alike_client_is_withheld_undecided(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    """A server without audit's client index cannot tell a look-alike's cases: it names none,
    and records no decision about them."""
    registry = protected()
    async with store_and_read_models("sqlite", tmp_path, registry, "audit_no_index") as (
        store,
        read_models,
    ):
        for projection in (TimelineProjection(), ClientTrailProjection()):
            handler = BusProjectionHandler(read_models, projection, service="audit")
            for recorded in [*late_recorded_case(), _sealed_registration(registry)]:
                await handler(recorded)
        deps = AuditDeps(
            ReadModelTimelines(read_models, registry),
            store,
            AccessControl(store, None, "casetrail/audit", home_agency=DEFAULT_HOME_AGENCY),
        )
        async with audit_server(AuditServicer(deps), issuer) as stub:
            call = stub.GetTimeline(
                audit_pb2.GetTimelineRequest(context=viewer(), case_id=CASE, page_size=100)
            )
            page = await call
            trailer = dict(await call.trailing_metadata())
        [entry] = [e for e in page.entries if e.event_type == ClientRegistered.event_type]
        assert json.loads(entry.cloudevent_json)["data"]["confirmed_not_duplicate_of"] == []
        assert trailer[REDACTED_KEY] == LOOKALIKES_PATH
        subjects = {r.subject for r in await store.read_all(0)}
        assert subjects == {CASE}
