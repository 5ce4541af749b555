"""Withdrawing a referral: by the agency (who may, from which states), and by the case's
closure when it reaches coordination (recorded, caused by the closure, once)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest

from casetrail.coordination.v1 import coordination_pb2 as pb
from casetrail.coordination.v1 import coordination_pb2_grpc
from casetrail_platform.commands import NotAllowed, NotFound, RuleBroken
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.policy.projection import CaseFactsReader
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.assignment import COUNSELING_NEEDS
from events.catalog.base import Role
from events.catalog.referrals import ReferralWithdrawn
from events.catalog.scheduling import LocationKind, ServiceCancelled, ServiceKind, ServiceLocation
from events.catalog.values import NeedCategory, Provider
from events.envelope import Actor, RecordedEvent
from services.coordination.adapters.projections import CASE_FACTS
from services.coordination.app.follow_ups import FollowUps
from services.coordination.app.handlers.running import Dependencies
from services.coordination.domain import errors
from services.coordination.domain.case import CaseState, Referral, ReferralStatus
from services.coordination.domain.commands import RescheduleService, WithdrawReferral
from services.coordination.domain.facts import CaseFacts, schedule_stream
from services.coordination.domain.referrals import decide_closure_withdrawals, decide_withdrawal
from services.coordination.domain.schedule import Schedule, ScheduleShown, Service
from services.coordination.domain.scheduling import REFERRAL_ENDED_REASON, decide_reschedule
from services.coordination.entrypoints.grpc_server import SERVICE_NAME, CoordinationServicer
from tests.support.grpc import serving
from tests.support.identity import TestIssuer
from tests.unit.coordination.rpc import (
    AN_HOUR,
    COUNSELING_CENTRE,
    NEXT_WEEK,
    PARATRANSIT,
    accept,
    assign,
    assigned_case,
    refer,
    refused,
    refused_alike,
    schedule_request,
)
from tests.unit.coordination.support import (
    OPENED,
    IntakeFeed,
    command_context,
    query_context,
    sample_agency,
    timestamp,
)

if TYPE_CHECKING:
    from tests.unit.coordination.rpc import Stub

COORDINATOR = Actor("user-coordinator", Role.COORDINATOR)
DANA = Actor("cm-dana", Role.CASE_MANAGER)
PROVIDER = Provider(provider_id="harbor-counseling", name="Harbor Counseling Centre")


def _state(*statuses: ReferralStatus, worker_id: str | None = "cm-dana") -> CaseState:
    state = CaseState(worker_id=worker_id, worker_role=Role.CASE_MANAGER)
    for index, status in enumerate(statuses):
        referral_id = f"ref-{index}"
        state.referrals[referral_id] = Referral(
            referral_id, PROVIDER, NeedCategory.COUNSELING, "counseling", "soon", status
        )
    return state


def _withdraw(referral_id: str = "ref-0") -> WithdrawReferral:
    return WithdrawReferral(
        case_id="case-1", referral_id=referral_id, reason="client changed their mind"
    )


@pytest.mark.parametrize("status", [ReferralStatus.PENDING, ReferralStatus.ACCEPTED])
def test_a_running_referral_is_withdrawn(status: ReferralStatus) -> None:
    events = decide_withdrawal(_state(status), _withdraw(), COORDINATOR)
    assert events == [
        ReferralWithdrawn(
            case_id="case-1",
            referral_id="ref-0",
            provider_id="harbor-counseling",
            reason="client changed their mind",
        )
    ]


@pytest.mark.parametrize(
    "status", [ReferralStatus.DECLINED, ReferralStatus.COMPLETED, ReferralStatus.WITHDRAWN]
)
def test_a_referral_that_ended_is_not_withdrawn(status: ReferralStatus) -> None:
    with pytest.raises(RuleBroken) as refusal:
        decide_withdrawal(_state(status), _withdraw(), COORDINATOR)
    assert refusal.value.rule == errors.REFERRAL_NOT_RUNNING
    assert refusal.value.details["status"] == status.value


def test_an_unknown_referral_is_not_found() -> None:
    with pytest.raises(NotFound):
        decide_withdrawal(_state(ReferralStatus.PENDING), _withdraw("ref-9"), COORDINATOR)


@pytest.mark.parametrize(
    ("actor", "allowed"),
    [
        (COORDINATOR, True),
        (DANA, True),
        (Actor("sw-lcsw", Role.SOCIAL_WORKER), False),  # carries cases, not this one
        (Actor("cm-other", Role.CASE_MANAGER), False),
        (Actor("sup-helen", Role.SUPERVISOR), False),
        (Actor("harbor-counseling", Role.PARTNER_AGENCY), False),
        (Actor("desk", Role.RECEPTIONIST), False),
    ],
)
def test_the_coordinator_or_the_cases_worker_withdraws(actor: Actor, allowed: bool) -> None:
    state = _state(ReferralStatus.PENDING)
    if allowed:
        assert decide_withdrawal(state, _withdraw(), actor)
    else:
        with pytest.raises(NotAllowed):
            decide_withdrawal(state, _withdraw(), actor)


AGENCY_DAY = date(2026, 3, 2)


def _counseling_state(worker_id: str, *referrals: tuple[NeedCategory, ReferralStatus]) -> CaseState:
    worker = sample_agency().worker(worker_id)
    state = CaseState(worker_id=worker_id, worker_role=None if worker is None else worker.role)
    for index, (need, status) in enumerate(referrals):
        state.referrals[f"ref-{index}"] = Referral(
            f"ref-{index}", PROVIDER, need, "counseling", "soon", status
        )
    return state


def _withdrawn_from(
    state: CaseState,
    needs: tuple[NeedCategory, ...],
    closed: bool = False,
    *,
    sensitive_shown: bool = True,
) -> list[object]:
    facts = CaseFacts("case-1", "client-1", needs, closed=closed)
    return list(
        decide_withdrawal(
            state,
            _withdraw(),
            COORDINATOR,
            facts,
            sample_agency(),
            AGENCY_DAY,
            sensitive_shown=sensitive_shown,
        )
    )


@pytest.mark.parametrize("need", sorted(COUNSELING_NEEDS))
@pytest.mark.parametrize("worker_id", ["cm-dana", "sw-expired", "cm-not-on-file"])
def test_a_counseling_need_is_not_handed_back_to_a_worker_who_may_not_counsel(
    need: NeedCategory, worker_id: str
) -> None:
    # A case manager carries a counseling need only while a provider has taken it on: the
    # assignment was let through because of this referral.
    state = _counseling_state(worker_id, (need, ReferralStatus.ACCEPTED))
    with pytest.raises(RuleBroken) as refusal:
        _withdrawn_from(state, (NeedCategory.HOUSING, need))
    assert refusal.value.rule == errors.COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER
    assert refusal.value.details["suggested_action"] == "TransferCase"
    # Told alike whichever need it is: the refusal names none.
    text = " ".join([refusal.value.description, *refusal.value.details.values()])
    assert not [n for n in NeedCategory if n is not NeedCategory.COUNSELING and n.value in text]
    assert "TransferCase" in text
    assert "MakeReferral" in text


@pytest.mark.parametrize(
    ("need", "sensitive_shown", "rule"),
    [
        # Shown no need calling for counseling, the caller is not told the referral's does.
        (NeedCategory.SUBSTANCE_USE, False, errors.WORKER_LACKS_REQUIRED_CREDENTIAL),
        (NeedCategory.MENTAL_HEALTH, False, errors.WORKER_LACKS_REQUIRED_CREDENTIAL),
        (NeedCategory.MENTAL_HEALTH, True, errors.COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER),
        # Counseling is no special data: shown, it explains the refusal.
        (NeedCategory.COUNSELING, False, errors.COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER),
    ],
)
def test_a_withdrawal_tells_of_counseling_only_to_a_caller_shown_the_referrals_need(
    need: NeedCategory, sensitive_shown: bool, rule: str
) -> None:
    state = _counseling_state("cm-dana", (need, ReferralStatus.ACCEPTED))
    with pytest.raises(RuleBroken) as refusal:
        _withdrawn_from(state, (NeedCategory.HOUSING, need), sensitive_shown=sensitive_shown)
    assert refusal.value.rule == rule
    assert refusal.value.details["suggested_action"] == "TransferCase"


@pytest.mark.parametrize(
    ("worker_id", "referrals", "needs", "closed"),
    [
        # A licensed social worker may take the need back.
        ("sw-lcsw", [(NeedCategory.COUNSELING, ReferralStatus.ACCEPTED)], None, False),
        # Another provider has the need (accepted, or done).
        (
            "cm-dana",
            [
                (NeedCategory.MENTAL_HEALTH, ReferralStatus.ACCEPTED),
                (NeedCategory.MENTAL_HEALTH, ReferralStatus.COMPLETED),
            ],
            None,
            False,
        ),
        # A pending referral meets no need yet: the worker carries nothing new.
        ("cm-dana", [(NeedCategory.COUNSELING, ReferralStatus.PENDING)], None, False),
        # No counseling need, or no longer the case's.
        ("cm-dana", [(NeedCategory.HOUSING, ReferralStatus.ACCEPTED)], None, False),
        ("cm-dana", [(NeedCategory.SUBSTANCE_USE, ReferralStatus.ACCEPTED)], (), False),
        # A closed case asks nothing of its worker.
        ("cm-dana", [(NeedCategory.COUNSELING, ReferralStatus.ACCEPTED)], None, True),
    ],
)
def test_a_withdrawal_that_leaves_no_counseling_with_an_unlicensed_worker_passes(
    worker_id: str,
    referrals: list[tuple[NeedCategory, ReferralStatus]],
    needs: tuple[NeedCategory, ...] | None,
    closed: bool,
) -> None:
    state = _counseling_state(worker_id, *referrals)
    needs = tuple({need for need, _ in referrals}) if needs is None else needs
    [withdrawn] = _withdrawn_from(state, needs, closed)
    assert isinstance(withdrawn, ReferralWithdrawn)


def test_a_closure_withdraws_an_accepted_counseling_referral_all_the_same() -> None:
    state = _counseling_state("cm-dana", (NeedCategory.COUNSELING, ReferralStatus.ACCEPTED))
    withdrawn = decide_closure_withdrawals(state, "case-1")
    assert [e.referral_id for e in withdrawn if isinstance(e, ReferralWithdrawn)] == ["ref-0"]


async def test_the_counseling_referral_a_case_managers_assignment_rests_on_is_kept(
    stub: Stub, intake: IntakeFeed
) -> None:
    # A case manager may carry a case with a counseling need once a provider has taken it on:
    # withdrawn, the referral would leave them with a need they may not meet.
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1", COUNSELING_CENTRE.provider_id)
    referral = await refer(stub, "case-1", "counseling")
    await accept(stub, "case-1", referral.referral_id)
    await assign(stub, "case-1", "cm-dana")
    refusal = await refused(stub.WithdrawReferral(_withdrawal(referral.referral_id)))
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "COUNSELING_REQUIRES_LICENSED_SOCIAL_WORKER",
    )
    assert "TransferCase" in refusal.message
    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
    )
    assert [r.status for r in view.referrals] == ["accepted"]
    # Carried by a licensed social worker, it may go.
    await stub.TransferCase(
        pb.TransferCaseRequest(
            context=command_context("coordinator"),
            case_id="case-1",
            worker_id="sw-lcsw",
            reason="counseling back in house",
        )
    )
    await stub.WithdrawReferral(_withdrawal(referral.referral_id))


def test_a_closure_withdraws_only_the_referrals_still_running() -> None:
    state = _state(
        ReferralStatus.PENDING,
        ReferralStatus.ACCEPTED,
        ReferralStatus.DECLINED,
        ReferralStatus.COMPLETED,
        ReferralStatus.WITHDRAWN,
    )
    withdrawn = decide_closure_withdrawals(state, "case-1")
    assert [(e.referral_id, e.reason) for e in withdrawn if isinstance(e, ReferralWithdrawn)] == [
        ("ref-0", "the case was closed"),
        ("ref-1", "the case was closed"),
    ]


ENDED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
"""When the referral of ``_left_scheduled`` ended."""


def _left_scheduled(status: ReferralStatus) -> tuple[Schedule, CaseState]:
    """A service booked from ``ref-0`` to start before the referral ended (``ENDED``, when
    ``status`` is not running), so its end's follow-up left it scheduled."""
    case = _state(status)
    if status not in (ReferralStatus.PENDING, ReferralStatus.ACCEPTED):
        case.referrals["ref-0"].ended_at = ENDED
    service = Service(
        "svc-1",
        "case-1",
        ServiceKind.COUNSELING,
        PROVIDER,
        ENDED - timedelta(hours=3),
        ENDED - timedelta(hours=2),
        ServiceLocation(kind=LocationKind.PROVIDER_SITE),
        "ref-0",
        None,
    )
    return Schedule(1, {"svc-1": service}), case


def _moved_to(starts_at: datetime) -> RescheduleService:
    return RescheduleService(
        case_id="case-1",
        service_id="svc-1",
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=1),
        reason="the counsellor is away",
    )


@pytest.mark.parametrize(
    "status", [ReferralStatus.DECLINED, ReferralStatus.COMPLETED, ReferralStatus.WITHDRAWN]
)
def test_a_service_of_a_referral_that_ended_is_not_moved_past_its_end(
    status: ReferralStatus,
) -> None:
    schedule, case = _left_scheduled(status)
    facts = CaseFacts("case-1", "client-1", (NeedCategory.COUNSELING,))
    for starts_at in (ENDED, ENDED + timedelta(days=7)):
        with pytest.raises(RuleBroken) as refusal:
            decide_reschedule(schedule, facts, case, _moved_to(starts_at), shown=ScheduleShown())
        assert refusal.value.rule == errors.REFERRAL_NOT_USABLE
        details = refusal.value.details
        assert (details["status"], details["ended_at"]) == (status.value, ENDED.isoformat())
    # Before the end it may still move (to when it took place, say).
    assert decide_reschedule(
        schedule, facts, case, _moved_to(ENDED - timedelta(hours=1)), shown=ScheduleShown()
    )


@pytest.mark.parametrize("status", [ReferralStatus.PENDING, ReferralStatus.ACCEPTED])
def test_a_service_of_a_running_referral_moves_anywhere(status: ReferralStatus) -> None:
    schedule, case = _left_scheduled(status)
    facts = CaseFacts("case-1", "client-1", (NeedCategory.COUNSELING,))
    assert decide_reschedule(
        schedule, facts, case, _moved_to(ENDED + timedelta(days=7)), shown=ScheduleShown()
    )


def _withdrawal(referral_id: str, role: str = "coordinator", **fields: str) -> object:
    return pb.WithdrawReferralRequest(
        context=command_context(role, user=fields.pop("user", None)),
        case_id="case-1",
        referral_id=referral_id,
        reason=fields.pop("reason", "client moved in with her daughter"),
    )


async def test_withdrawing_through_grpc(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    await assigned_case(stub, intake, "sw-lcsw", NeedCategory.COUNSELING)
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    await accept(stub, "case-1", referral_id)
    before = await store.read_stream("case-case-1")

    # Another case-carrying worker, a partner and an empty reason are refused, writing nothing.
    other = await refused(stub.WithdrawReferral(_withdrawal(referral_id, "case_manager")))
    assert other.code is grpc.StatusCode.PERMISSION_DENIED
    partner = await refused(stub.WithdrawReferral(_withdrawal(referral_id, "partner_agency")))
    assert partner.code is grpc.StatusCode.PERMISSION_DENIED
    empty = await refused(stub.WithdrawReferral(_withdrawal(referral_id, reason="  ")))
    assert (empty.code, empty.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["reason"])
    too_long = await refused(stub.WithdrawReferral(_withdrawal(referral_id, reason="x" * 20_001)))
    assert (too_long.code, too_long.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["reason"])
    missing = await refused(stub.WithdrawReferral(_withdrawal("no-such-referral")))
    assert missing.code is grpc.StatusCode.NOT_FOUND
    assert await store.read_stream("case-case-1") == before

    # The case's own worker withdraws it.
    done = await stub.WithdrawReferral(_withdrawal(referral_id, "social_worker", user="sw-lcsw"))
    assert done.result.case_id == "case-1"
    assert len(done.result.event_ids) == 1
    view = await stub.GetCaseCoordination(
        pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
    )
    assert [(r.referral_id, r.status) for r in view.referrals] == [(referral_id, "withdrawn")]

    again = await refused(stub.WithdrawReferral(_withdrawal(referral_id)))
    assert (again.code, again.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "REFERRAL_NOT_RUNNING")
    assert again.metadata["status"] == "withdrawn"
    # The provider can no longer complete it, nor can services come from it.
    completed = await refused(
        stub.CompleteReferral(
            pb.CompleteReferralRequest(
                context=command_context("partner_agency", agency=COUNSELING_CENTRE.provider_id),
                case_id="case-1",
                referral_id=referral_id,
                provider_id=COUNSELING_CENTRE.provider_id,
                outcome="two sessions",
            )
        )
    )
    assert completed.rule == "REFERRAL_NOT_ACCEPTED"
    unusable = await refused(
        stub.ScheduleService(
            schedule_request(
                "case-1",
                "counseling",
                NEXT_WEEK,
                provider=COUNSELING_CENTRE,
                role="coordinator",
                referral_id=referral_id,
            )
        )
    )
    assert unusable.rule == "REFERRAL_NOT_USABLE"


async def test_a_worker_not_on_the_case_is_told_the_same_whether_the_case_exists(
    stub: Stub, intake: IntakeFeed, store: SqliteEventStore
) -> None:
    # A case-carrying worker withdraws only on the case they carry: asked about another's,
    # the answer must not tell a real case id from an unknown one (as planning's commands).
    await assigned_case(stub, intake, "sw-lcsw", NeedCategory.COUNSELING)
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    before = await store.read_all()

    def withdraw(case_id: str) -> Any:
        request = _withdrawal(referral_id, "case_manager", user="cm-dana")
        request.case_id = case_id  # type: ignore[attr-defined]
        return stub.WithdrawReferral(request)

    assert (await refused_alike(withdraw)).code is grpc.StatusCode.PERMISSION_DENIED
    assert await store.read_all() == before


async def test_a_closure_withdraws_the_referrals_still_running_once(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    # Planning closed the case before it heard of these referrals (CloseCase beat the bus).
    await intake.open_case(
        "case-1", "client-1", [NeedCategory.COUNSELING, NeedCategory.TRANSPORTATION]
    )
    await intake.consent("case-1", "client-1")
    await intake.consent("case-1", "client-1", recipient=PARATRANSIT.provider_id)
    pending = (await refer(stub, "case-1", "counseling")).referral_id
    accepted = (await refer(stub, "case-1", "transportation", PARATRANSIT)).referral_id
    await accept(stub, "case-1", accepted, PARATRANSIT)
    closure = await intake.close_case("case-1")

    follow_ups = FollowUps(deps)
    await follow_ups(closure)
    await follow_ups(closure)  # delivered again: nothing more

    history = await store.read_stream("case-case-1")
    withdrawn = [r for r in history if isinstance(r.event, ReferralWithdrawn)]
    assert len(withdrawn) == 2
    for recorded in withdrawn:
        assert recorded.metadata.causation_id == closure.event_id
        assert recorded.metadata.actor == Actor("coordination", Role.SYSTEM)
        assert isinstance(recorded.event, ReferralWithdrawn)
        assert recorded.event.reason == "the case was closed"
    ended = {r.event.referral_id for r in withdrawn if isinstance(r.event, ReferralWithdrawn)}
    assert ended == {pending, accepted}

    # A referral on the case coordination knows is closed is refused.
    refusal = await refused(
        stub.MakeReferral(
            pb.MakeReferralRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                provider=COUNSELING_CENTRE,
                need_category="counseling",
                service="counseling sessions",
                urgency="soon",
                reason="low mood",
            )
        )
    )
    assert (refusal.code, refusal.rule) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_CLOSED")
    assert len(await store.read_stream("case-case-1")) == len(history)


async def test_a_closure_of_a_case_reopened_since_withdraws_nothing(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1")
    await refer(stub, "case-1", "counseling")
    closure = await intake.close_case("case-1")
    await intake.reopen_case("case-1")
    await FollowUps(deps)(closure)
    history = await store.read_stream("case-case-1")
    assert not [r for r in history if isinstance(r.event, ReferralWithdrawn)]


class _ClosingWhileRead:
    """Read models on which the first read of a case's facts (by MakeReferral) is answered
    "open", and the case is then closed, and the closure's follow-up run, before the reader
    goes on: the race of a referral with a closure, at its worst moment."""

    def __init__(
        self, inner: SqliteReadModelStore, close: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self._inner = inner
        self._close: Callable[[], Coroutine[Any, Any, None]] | None = close
        self.closure: asyncio.Task[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get(self, collection: str, key: str) -> Any:
        document = await self._inner.get(collection, key)
        if collection == CASE_FACTS and self._close is not None:
            self.closure = asyncio.create_task(self._close())
            self._close = None
            # The follow-up runs to its end meanwhile, unless the referral holds the case.
            await asyncio.sleep(0.2)
        return document


async def test_a_referral_racing_the_closures_follow_up_is_withdrawn_by_it(
    intake: IntakeFeed,
    deps: Dependencies,
    read_models: SqliteReadModelStore,
    store: SqliteEventStore,
    issuer: TestIssuer,
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1")

    async def close() -> None:
        await FollowUps(racing)(await intake.close_case("case-1"))

    closing = _ClosingWhileRead(read_models, close)
    racing = replace(deps, read_models=cast("ReadModelStore", closing))
    access = AccessControl(
        store,
        CaseFactsReader(read_models),
        "casetrail/coordination",
        home_agency=DEFAULT_HOME_AGENCY,
    )
    servicer = CoordinationServicer(racing, access)

    def register(server: grpc.aio.Server) -> None:
        coordination_pb2_grpc.add_CoordinationServiceServicer_to_server(servicer, server)

    async with serving(register, SERVICE_NAME, issuer) as channel:
        stub: Stub = coordination_pb2_grpc.CoordinationServiceStub(channel)  # type: ignore[assignment]
        referral = await refer(stub, "case-1", "counseling")
        assert closing.closure is not None
        await closing.closure
        view = await stub.GetCaseCoordination(
            pb.GetCaseCoordinationRequest(context=query_context(), case_id="case-1")
        )
    assert [(r.referral_id, r.status) for r in view.referrals] == [
        (referral.referral_id, "withdrawn")
    ]


async def test_a_withdrawn_referral_calls_off_its_services_still_to_come_once(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1")
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    await accept(stub, "case-1", referral_id)
    booked = await stub.ScheduleService(
        schedule_request(
            "case-1",
            "counseling",
            NEXT_WEEK,
            provider=COUNSELING_CENTRE,
            role="coordinator",
            referral_id=referral_id,
        )
    )
    await stub.WithdrawReferral(_withdrawal(referral_id))
    [withdrawal] = [
        r for r in await store.read_stream("case-case-1") if isinstance(r.event, ReferralWithdrawn)
    ]

    follow_ups = FollowUps(deps)
    await follow_ups(withdrawal)
    await follow_ups(withdrawal)  # delivered again: nothing more

    schedule = await store.read_stream(schedule_stream("client-1"))
    cancelled = [r for r in schedule if isinstance(r.event, ServiceCancelled)]
    assert [
        (r.event.service_id, r.event.reason, r.metadata.causation_id)
        for r in cancelled
        if isinstance(r.event, ServiceCancelled)
    ] == [(booked.service_id, REFERRAL_ENDED_REASON, withdrawal.event_id)]


async def _left_scheduled_by_a_withdrawal(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> tuple[datetime, Any, RecordedEvent]:
    """A service booked from a referral, starting before the referral's withdrawal, which its
    follow-up leaves scheduled: its start, the booking's answer and the withdrawal."""
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1")
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    await accept(stub, "case-1", referral_id)
    started = OPENED + 2 * AN_HOUR  # before the withdrawal: its follow-up leaves it
    booked = await stub.ScheduleService(
        schedule_request(
            "case-1",
            "counseling",
            started,
            provider=COUNSELING_CENTRE,
            role="coordinator",
            referral_id=referral_id,
        )
    )
    await stub.WithdrawReferral(_withdrawal(referral_id))
    [withdrawal] = [
        r for r in await store.read_stream("case-case-1") if isinstance(r.event, ReferralWithdrawn)
    ]
    await FollowUps(deps)(withdrawal)
    return started, booked, withdrawal


async def test_a_service_left_scheduled_by_a_withdrawal_is_not_moved_past_it(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    started, booked, withdrawal = await _left_scheduled_by_a_withdrawal(stub, intake, deps, store)

    def move(starts_at: datetime) -> Any:
        return stub.RescheduleService(
            pb.RescheduleServiceRequest(
                context=command_context("coordinator"),
                case_id="case-1",
                service_id=booked.service_id,
                starts_at=timestamp(starts_at),
                ends_at=timestamp(starts_at + AN_HOUR),
                reason="the counsellor is away",
            )
        )

    before = await store.read_stream(schedule_stream("client-1"))
    refusal = await refused(move(NEXT_WEEK))
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFERRAL_NOT_USABLE",
    )
    assert refusal.metadata["ended_at"] == withdrawal.recorded_at.isoformat()
    assert await store.read_stream(schedule_stream("client-1")) == before
    await move(started + AN_HOUR)  # still before the withdrawal


async def test_a_service_left_scheduled_by_a_withdrawal_is_not_delivered_past_it(
    stub: Stub, intake: IntakeFeed, deps: Dependencies, store: SqliteEventStore
) -> None:
    """Where it took place is where it moves to: recorded as delivered starting at or after the
    referral's end, it would be care from a referral no longer running (and claimable), which
    RescheduleService refuses."""
    started, booked, withdrawal = await _left_scheduled_by_a_withdrawal(stub, intake, deps, store)

    def delivered(role: str, starts_at: datetime) -> Any:
        return stub.RecordServiceDelivered(
            pb.RecordServiceDeliveredRequest(
                context=command_context(role, agency=COUNSELING_CENTRE.provider_id)
                if role == "partner_agency"
                else command_context(role),
                case_id="case-1",
                service_id=booked.service_id,
                starts_at=timestamp(starts_at),
                ends_at=timestamp(starts_at + timedelta(minutes=1)),
            )
        )

    before = await store.read_stream(schedule_stream("client-1"))
    after_the_end = withdrawal.recorded_at + timedelta(seconds=1)
    for role in ("partner_agency", "coordinator"):
        refusal = await refused(delivered(role, after_the_end))
        assert (refusal.code, refusal.rule) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "REFERRAL_NOT_USABLE",
        )
        assert refusal.metadata["ended_at"] == withdrawal.recorded_at.isoformat()
    assert await store.read_stream(schedule_stream("client-1")) == before
    await delivered("partner_agency", started)  # given before the withdrawal


@pytest.mark.parametrize("role", ["partner_agency", "coordinator"])
async def test_a_withdrawal_landing_as_a_delivery_is_decided_is_not_delivered_past(
    stub: Stub,
    intake: IntakeFeed,
    store: SqliteEventStore,
    monkeypatch: pytest.MonkeyPatch,
    role: str,
) -> None:
    """The referral withdrawn between the delivery's decision and its append: the delivery,
    of a role that acts whoever carries the case, was written on the referral as it stood
    before, starting past the end (care from a referral no longer running, and claimable),
    where the case's stream it decided on guards it now and it decides again."""
    await intake.open_case("case-1", "client-1", [NeedCategory.COUNSELING])
    await intake.consent("case-1", "client-1")
    referral_id = (await refer(stub, "case-1", "counseling")).referral_id
    await accept(stub, "case-1", referral_id)
    booked = await stub.ScheduleService(
        schedule_request(
            "case-1",
            "counseling",
            OPENED + 2 * AN_HOUR,
            provider=COUNSELING_CENTRE,
            role="coordinator",
            referral_id=referral_id,
        )
    )
    append = store.append

    async def withdrawn_first(stream: str, events: Any, *args: Any, **kwargs: Any) -> Any:
        if stream == schedule_stream("client-1"):
            monkeypatch.setattr(store, "append", append)
            await stub.WithdrawReferral(_withdrawal(referral_id))
        return await append(stream, events, *args, **kwargs)

    monkeypatch.setattr(store, "append", withdrawn_first)
    before = await store.read_stream(schedule_stream("client-1"))
    starts_at = datetime.now(UTC) + timedelta(minutes=1)  # after the withdrawal, given ahead
    refusal = await refused(
        stub.RecordServiceDelivered(
            pb.RecordServiceDeliveredRequest(
                context=command_context(role, agency=COUNSELING_CENTRE.provider_id)
                if role == "partner_agency"
                else command_context(role),
                case_id="case-1",
                service_id=booked.service_id,
                starts_at=timestamp(starts_at),
                ends_at=timestamp(starts_at + timedelta(minutes=1)),
            )
        )
    )
    assert (refusal.code, refusal.rule) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFERRAL_NOT_USABLE",
    )
    assert await store.read_stream(schedule_stream("client-1")) == before
