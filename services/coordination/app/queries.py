"""Reading what coordination knows, with need-to-know checks on who asks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from casetrail_platform.commands import NotFound, RuleBroken
from casetrail_platform.decide import folded
from casetrail_platform.policy.redaction import is_sensitive_code
from events.catalog.values import NeedCategory
from services.coordination.adapters import read_models as views
from services.coordination.app.handlers.running import Dependencies, client_schedule
from services.coordination.domain.agency import BudgetLine, Program, Worker
from services.coordination.domain.assignment import fit_refusals, open_needs
from services.coordination.domain.budget import BUDGET_LINE, BudgetLineState
from services.coordination.domain.case import CaseState, case_state
from services.coordination.domain.facts import CaseFacts, budget_stream, case_stream
from services.coordination.domain.schedule import Service, ServiceStatus


@dataclass(frozen=True, slots=True)
class CaseCoordination:
    facts: CaseFacts
    state: CaseState
    services: list[Service]


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    worker: Worker
    caseload: int


@dataclass(frozen=True, slots=True)
class WorkerFit:
    worker: Worker
    caseload: int
    refusals: list[RuleBroken]


async def case_coordination(deps: Dependencies, case_id: str) -> CaseCoordination:
    """What coordination knows of the case; who may see it is the access policy's decision."""
    facts = await views.case_facts(deps.read_models, case_id)
    if facts is None:
        raise NotFound("case", case_id)
    state = case_state(await deps.store.read_stream(case_stream(case_id)))
    schedule = await client_schedule(deps, facts.client_id)
    services = sorted(
        (s for s in schedule.services.values() if s.case_id == case_id),
        key=lambda service: service.starts_at,
    )
    return CaseCoordination(facts, state, services)


async def special_referrals(deps: Dependencies, case_id: str) -> frozenset[str]:
    """The ids of the case's referrals of a special-data need (``is_sensitive_code``), which a
    reader not entitled to sensitive values is shown nowhere: neither among the case's
    referrals nor as the referral a service of the client's schedule was booked from."""
    state = case_state(await deps.store.read_stream(case_stream(case_id)))
    return frozenset(
        referral.referral_id
        for referral in state.referrals.values()
        if is_sensitive_code(referral.need_category.value)
    )


async def special_services(deps: Dependencies, case_id: str) -> frozenset[str]:
    """The ids of the case's services of a special-data kind (``is_sensitive_code``), which a
    reader not entitled to sensitive values is shown nowhere: neither among the case's services
    nor as the service a reservation of a budget line is for."""
    facts = await views.case_facts(deps.read_models, case_id)
    if facts is None:
        return frozenset()
    schedule = await client_schedule(deps, facts.client_id)
    return frozenset(
        service.service_id
        for service in schedule.services.values()
        if service.case_id == case_id and is_sensitive_code(service.kind.value)
    )


async def cases_of_client(deps: Dependencies, client_id: str) -> list[str]:
    """The client's cases as coordination knows them (intake's openings, from the bus)."""
    return await views.cases_of_client(deps.read_models, client_id)


async def schedule_of_client(
    deps: Dependencies, client_id: str, include_past: bool
) -> list[Service]:
    """The client's services; the entrypoint discloses each case's under the access policy."""
    schedule = await client_schedule(deps, client_id)
    return sorted(
        (
            service
            for service in schedule.services.values()
            if include_past or service.status is ServiceStatus.SCHEDULED
        ),
        key=lambda service: service.starts_at,
    )


async def workers(deps: Dependencies) -> list[WorkerLoad]:
    """The agency's staff with their caseloads; who may ask is decided (and a refusal recorded)
    by the entrypoint before this looks anything up."""
    return await _loads(deps)


async def suggest_workers(
    deps: Dependencies, case_id: str, on: date, *, sensitive_shown: bool
) -> tuple[tuple[NeedCategory, ...], list[WorkerFit]]:
    """The case's open needs and every worker with the reasons they do not fit on ``on`` (if
    any): fitting workers first, the least loaded (relative to capacity) first. Who may ask is
    decided (and a refusal recorded) by the entrypoint before this looks anything up;
    ``sensitive_shown``: whether the decision shows them the case's sensitive values, which
    the reasons tell of only then (``fit_refusals``)."""
    coordination = await case_coordination(deps, case_id)
    needs = open_needs(coordination.facts, coordination.state)
    fits = [
        WorkerFit(
            load.worker,
            load.caseload,
            fit_refusals(
                case_id, load.worker, needs, load.caseload, on, sensitive_shown=sensitive_shown
            ),
        )
        for load in await _loads(deps)
    ]
    fits.sort(
        key=lambda fit: (
            bool(fit.refusals),
            fit.caseload / max(fit.worker.caseload_capacity, 1),
            fit.worker.worker_id,
        )
    )
    return needs, fits


async def _loads(deps: Dependencies) -> list[WorkerLoad]:
    loads = await views.caseloads(deps.store, deps.read_models)
    return [WorkerLoad(worker, loads.get(worker.worker_id, 0)) for worker in deps.agency.workers]


async def budget_line_state(
    deps: Dependencies, line_id: str, listed: int = 0
) -> tuple[BudgetLine, BudgetLineState]:
    """The line and its state with its ``listed`` newest reservations (its totals whole)."""
    line = deps.agency.budget_line(line_id)
    if line is None:
        raise NotFound("budget line", line_id)
    async with folded(deps.store, budget_stream(line_id), BUDGET_LINE) as state:
        return line, state.state.newest(listed)


def programs(deps: Dependencies) -> tuple[Program, ...]:
    """The agency's programmes; who may ask is decided as for ``workers``."""
    return deps.agency.programs
