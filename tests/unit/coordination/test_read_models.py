"""Coordination's read models: intake's facts from the bus, assignments and caseloads."""

from __future__ import annotations

from datetime import timedelta

from casetrail_platform.commands import CommandContext
from casetrail_platform.identity.development import DEFAULT_AGENCY
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.projections.runner import catch_up
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.base import Role
from events.catalog.cases import CaseClosed, CaseReopened, DischargeReason
from events.catalog.erasure import ClientErased
from events.catalog.values import NeedCategory
from events.envelope import Actor
from services.coordination.adapters import read_models as views
from services.coordination.adapters.projections import CASE_FACTS, AssignmentsProjection
from services.coordination.app.handlers import assignment
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain.commands import AssignCase, TransferCase
from tests.unit.coordination.support import TODAY, IntakeFeed


def coordinator(key: str) -> CommandContext:
    return CommandContext(Actor("coord-1", Role.COORDINATOR), key, occurred_at=TODAY)


async def test_case_facts_gather_presenting_and_assessed_needs_once(
    intake: IntakeFeed, read_models: SqliteReadModelStore
) -> None:
    await intake.open_case(
        "case-1",
        "client-1",
        [NeedCategory.HOME_CARE, NeedCategory.HEALTH],
        assessed=[NeedCategory.HEALTH, NeedCategory.COUNSELING],
    )
    facts = await views.case_facts(read_models, "case-1")
    assert facts is not None
    assert facts.client_id == "client-1"
    assert facts.needs == (NeedCategory.HOME_CARE, NeedCategory.HEALTH, NeedCategory.COUNSELING)
    await intake.close_case("case-1")
    closed = await views.case_facts(read_models, "case-1")
    assert closed is not None
    assert closed.closed
    await intake.reopen_case("case-1")
    reopened = await views.case_facts(read_models, "case-1")
    assert reopened is not None
    assert not reopened.closed


async def test_an_event_delivered_twice_is_applied_once(
    intake: IntakeFeed, read_models: SqliteReadModelStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    closing = CaseClosed(case_id="case-1", reason=DischargeReason.CLIENT_INDEPENDENT)
    recorded = await intake.deliver(closing, "case-case-1", source="casetrail/planning")
    await intake.reopen_case("case-1")
    await intake.handler(recorded)  # the closure again, as a redelivery
    facts = await views.case_facts(read_models, "case-1")
    assert facts is not None
    assert not facts.closed


async def test_caseloads_are_exact_even_before_the_projection_catches_up(
    deps: Dependencies,
    intake: IntakeFeed,
    store: SqliteEventStore,
    read_models: SqliteReadModelStore,
) -> None:
    for case_id in ("case-1", "case-2", "case-3"):
        await intake.open_case(case_id, f"client-{case_id}", [NeedCategory.HOME_CARE])
    principal = Principal("coord-1", Role.COORDINATOR, DEFAULT_AGENCY, "test")
    access = AccessControl(
        store,
        CaseFactsReader(deps.read_models),
        "casetrail/coordination",
        home_agency=DEFAULT_HOME_AGENCY,
    )
    await assignment.assign_case(
        deps,
        coordinator("a-1"),
        AssignCase(case_id="case-1", worker_id="sw-lcsw"),
        principal,
        access,
    )
    await catch_up(store, read_models, AssignmentsProjection())
    await assignment.assign_case(
        deps,
        coordinator("a-2"),
        AssignCase(case_id="case-2", worker_id="sw-lcsw"),
        principal,
        access,
    )
    await assignment.transfer_case(
        deps,
        coordinator("t-1"),
        TransferCase(case_id="case-1", worker_id="cm-dana", reason="lighter caseload"),
        principal,
        access,
    )
    # The projection still says case-1 is sw-lcsw's and knows nothing of case-2.
    assert await views.caseload(store, read_models, "sw-lcsw") == 1
    assert await views.caseloads(store, read_models) == {"sw-lcsw": 1, "cm-dana": 1}
    await catch_up(store, read_models, AssignmentsProjection())
    assert await views.assignments(store, read_models) == {
        "case-1": "cm-dana",
        "case-2": "sw-lcsw",
    }


async def test_a_closure_arriving_after_the_reopening_leaves_the_case_open(
    intake: IntakeFeed, read_models: SqliteReadModelStore
) -> None:
    """Planning records the closure, intake the reopening: two topics, so coordination may
    receive them in either order (a lagging relay, a replay of the topics). The case is open
    once reopened, whichever arrived first, as a rebuild in the other order would say."""
    await intake.open_case("case-1", "client-1", [NeedCategory.HOME_CARE])
    closing = intake.record(
        CaseClosed(case_id="case-1", reason=DischargeReason.CLIENT_INDEPENDENT),
        "case-case-1",
        source="casetrail/planning",
        occurred_at=TODAY,
    )
    reopening = intake.record(
        CaseReopened(case_id="case-1", reason="fell again"), "case-case-1", occurred_at=TODAY
    )
    await intake.handler(reopening)
    await intake.handler(closing)
    facts = await views.case_facts(read_models, "case-1")
    assert facts is not None
    assert not facts.closed
    assert facts.closed_at is None
    # Closed again later: closed, as of the newer closure, whatever order the two came in.
    again = intake.record(
        CaseClosed(case_id="case-1", reason=DischargeReason.CLIENT_INDEPENDENT),
        "case-case-1",
        source="casetrail/planning",
        occurred_at=TODAY + timedelta(days=3),
    )
    await intake.handler(again)
    closed = await views.case_facts(read_models, "case-1")
    assert closed is not None
    assert closed.closed
    assert closed.closed_at == TODAY + timedelta(days=3)


async def test_an_erased_case_reads_as_its_rebuild_after_the_erasure(
    intake: IntakeFeed, read_models: SqliteReadModelStore
) -> None:
    """Live, the erasure scrubs the needs; rebuilt after it, the same events read erased from
    the start (their keys are gone). Both give the same document."""
    needs = [NeedCategory.HOME_CARE, NeedCategory.HEALTH]
    await intake.open_case("case-live", "client-1", needs, assessed=[NeedCategory.COUNSELING])
    erased = [NeedCategory.ERASED] * 2
    await intake.open_case("case-rebuilt", "client-1", erased, assessed=[NeedCategory.ERASED])
    await intake.deliver(
        ClientErased(
            client_id="client-1", case_ids=("case-live", "case-rebuilt"), request_reference="r"
        ),
        "client-client-1",
    )
    live = await read_models.get(CASE_FACTS, "case-live")
    rebuilt = await read_models.get(CASE_FACTS, "case-rebuilt")
    assert live is not None
    assert rebuilt is not None
    assert live["needs"] == ["erased"]
    assert {**live, "case_id": ""} == {**rebuilt, "case_id": ""}
