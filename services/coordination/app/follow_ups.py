"""What coordination records of itself when a case closes or a service is called off.

Planning closes cases, and checks for scheduled services and running referrals against its
bus-fed copy of coordination's records; coordination refuses new services and referrals on
closed cases against its bus-fed copy of the closure. Neither copy is current at the moment
both commands meet, so a service booked or a referral made as the case closed can pass both
checks. Coordination settles it when the closure reaches it: the case's referrals still pending
or accepted are withdrawn (the partner's part in the case ends), its services still scheduled
from the closure on are cancelled, and each cancelled service's reservations released (a
follow-up of the cancellation, as for any service called off). What is still reserved for the
case naming no service is released too: nothing records it spent, and it would hold the
budget line for a case no longer worked on. Reservations of services that took place stay: that
money was spent. Likewise a referral declined, completed or withdrawn calls off the
services booked from it still to come (the provider will not give them).

Fed from the bus (``FollowUps``, subscribed as ``follow-ups``), so a closure is acted on however
late it arrives. What it records names the event it follows as its causation id, and is
decided on the streams as they are: a cancellation or a referral's end delivered again finds
its follow-up recorded (or nothing left to cancel or release) and records nothing. A closure's
follow-up also depends on the case facts (reopened since, or not), so it is decided once, on
the facts as the bus has them, and remembered (``FOLLOWED``): delivered again, it does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID, uuid5

from casetrail_platform.bus.errors import BarrierNotReachedError, RetriableHandlerError
from casetrail_platform.decide import folded, pause_before
from casetrail_platform.errors import ConcurrencyError
from casetrail_platform.folded import Fold
from events.catalog.base import CaseEvent, Role
from events.catalog.cases import CaseClosed
from events.catalog.referrals import ReferralCompleted, ReferralDeclined, ReferralWithdrawn
from events.catalog.scheduling import ServiceCancelled
from events.envelope import Actor, EventMetadata, NewEvent, RecordedEvent
from services.coordination.adapters import read_models as views
from services.coordination.adapters.projections import CaseFactsProjection
from services.coordination.app.handlers.running import SOURCE, Dependencies, case_lock
from services.coordination.domain.agency import BudgetLine
from services.coordination.domain.budget import BUDGET_LINE, BudgetLineState
from services.coordination.domain.case import CASE
from services.coordination.domain.facts import budget_stream, case_stream, schedule_stream
from services.coordination.domain.funding import decide_releases, releases_not_before
from services.coordination.domain.referrals import (
    decide_closure_withdrawals,
    withdrawals_not_before,
)
from services.coordination.domain.schedule import SCHEDULE
from services.coordination.domain.scheduling import (
    CLOSURE_REASON,
    cancellations_not_before,
    decide_closure_cancellations,
    decide_referral_end_cancellations,
)

FOLLOW_UP = Actor("coordination", Role.SYSTEM)
"""Who records the follow-ups: coordination itself, on no person's command."""

S = TypeVar("S")

CANCELLED_RELEASE = "the service was cancelled"

FACTS_WAIT = 0.05
FACTS_TRIES = 40
"""How long (tries of ``FACTS_WAIT`` seconds) a closure waits for coordination's case facts to
hold it before the bus is asked to hand it over again later."""

FOLLOWED = "follow-ups"
"""Under what name the closures whose follow-up is done are tracked in the read models, as a
projection's applied events are (``DocumentTransaction.mark_applied``; the follow-ups'
consumer group's name), even when it found nothing to do. The embedded bus hands every closure
over again at each start (Kafka keeps the group's progress): decided again there, on case
facts built again from the bus beside it (an upgrade's new layout) that held the closure and
not yet the reopening after it, an old closure called off the reopened case's work."""


class FollowUps:
    """A bus handler for ``event_types``; idempotent, as the bus requires."""

    name = "follow-ups"
    event_types = frozenset(
        {
            CaseClosed.event_type,
            ServiceCancelled.event_type,
            ReferralDeclined.event_type,
            ReferralCompleted.event_type,
            ReferralWithdrawn.event_type,
        }
    )

    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    async def __call__(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        match event:
            case CaseClosed():
                await self._closed(recorded, event.case_id)
            case ServiceCancelled() if recorded.metadata.source == SOURCE:
                async with self._deps.locks.holding([case_lock(event.case_id)]):
                    await self._release(
                        recorded, event.case_id, event.service_id, CANCELLED_RELEASE
                    )
            case ReferralDeclined() | ReferralCompleted() | ReferralWithdrawn() if (
                recorded.metadata.source == SOURCE
            ):
                async with self._deps.locks.holding([case_lock(event.case_id)]):
                    await self._referral_ended(recorded, event.case_id, event.referral_id)

    async def _closed(self, recorded: RecordedEvent, case_id: str) -> None:
        if await self._followed(recorded):
            return  # decided once already: the same on every backend, however often delivered
        # Commands on the case are refused once the case facts hold the closure; acting only
        # after that (under the case's lock) leaves no moment in which a new service or
        # reservation is both allowed and missed by the clean-up.
        await self._facts_hold(recorded, case_id)
        await self._follow_closure(recorded, case_id)
        async with self._deps.read_models.transaction() as transaction:
            await transaction.mark_applied(FOLLOWED, [recorded.event_id])

    async def _followed(self, recorded: RecordedEvent) -> bool:
        async with self._deps.read_models.transaction() as transaction:
            return bool(await transaction.already_applied(FOLLOWED, [recorded.event_id]))

    async def _follow_closure(self, recorded: RecordedEvent, case_id: str) -> None:
        async with self._deps.locks.holding([case_lock(case_id)]):
            facts = await views.case_facts(self._deps.read_models, case_id)
            if facts is None:
                return  # never opened here: no service, referral or reservation either
            closed_now = facts.closed_at is not None
            if closed_now:
                await record_follow_up(
                    self._deps,
                    recorded,
                    case_stream(case_id),
                    CASE,
                    lambda case: decide_closure_withdrawals(case, case_id),
                    withdrawals_not_before,
                )
            # Reopened since, its services inside the time it was closed are still called
            # off (none can be delivered there); the rest are the open case's.
            await record_follow_up(
                self._deps,
                recorded,
                schedule_stream(facts.client_id),
                SCHEDULE,
                lambda schedule: decide_closure_cancellations(schedule, facts),
                cancellations_not_before,
            )
            if not closed_now:
                return
            # The cancellations' own follow-ups release their reservations; those naming no
            # service have no cancellation to follow, so the closure releases them. Under the
            # case's lock, as ReserveBudget decides: a reservation is either read here or
            # meets the closure (CASE_CLOSED).
            await self._release(recorded, case_id, None, CLOSURE_REASON)

    async def _referral_ended(
        self, recorded: RecordedEvent, case_id: str, referral_id: str
    ) -> None:
        facts = await views.case_facts(self._deps.read_models, case_id)
        if facts is None:
            # Coordination recorded the referral on facts holding the case: missing now, they
            # are being built again (an upgrade's new layout) unless they hold all the bus has
            # of the case, as the closure's follow-up waits for its closure (_facts_hold).
            caught_up = self._deps.case_facts_caught_up
            if caught_up is None or await caught_up(case_id):
                return  # no case here, so no service either
            raise BarrierNotReachedError(
                f"case {case_id} is not in coordination's case facts yet"
                f" (referral {referral_id} ended)"
            )
        ended_at = recorded.recorded_at
        await record_follow_up(
            self._deps,
            recorded,
            schedule_stream(facts.client_id),
            SCHEDULE,
            lambda schedule: decide_referral_end_cancellations(
                schedule, case_id, referral_id, ended_at
            ),
            cancellations_not_before,
        )
        # The cancellations' own follow-ups release their reservations.

    async def _release(
        self, cause: RecordedEvent, case_id: str, service_id: str | None, reason: str
    ) -> None:
        """Release on every line what is still reserved for ``service_id`` of the case (for
        the case itself, naming no service, when ``None``)."""
        for line in self._deps.agency.budget_lines:
            await record_follow_up(
                self._deps,
                cause,
                budget_stream(line.budget_line),
                BUDGET_LINE,
                _releases(line, case_id, service_id, reason),
                lambda state, _decided: releases_not_before(state, case_id, service_id),
            )

    async def _facts_hold(self, recorded: RecordedEvent, case_id: str) -> None:
        """The case facts hold the closure and all the bus has of the case (when they are fed
        from one): a reopening already on the bus counts, however far the facts' own consumer
        group has got (a group building them again from the bus, say); one not published yet
        comes after the closure's follow-up. On the embedded bus, rebuilt at each start by the
        relays at their own pace, one recorded before the start counts as on the bus
        (``InProcessBus.refilled``): the closure may come back before it.

        Not yet is ``BarrierNotReachedError``, retried for as long as it takes, never
        dead-lettered (the group gets there: after an embedded start once every relay has
        republished the case). Asked first, so that the closure not in the facts once their
        group is past it (dead-lettered there) stays a failure the retry policy counts."""
        caught_up = self._deps.case_facts_caught_up
        if caught_up is not None and not await caught_up(case_id):
            raise BarrierNotReachedError(
                f"coordination's case facts do not hold all the bus has of case {case_id} yet"
                f" (closure {recorded.event_id})"
            )
        if not await self._closure_applied(recorded):
            raise RetriableHandlerError(
                f"closure {recorded.event_id} is not in coordination's case facts yet"
            )

    async def _closure_applied(self, recorded: RecordedEvent) -> bool:
        for _ in range(FACTS_TRIES):
            async with self._deps.read_models.transaction() as transaction:
                if await transaction.already_applied(CaseFactsProjection.name, [recorded.event_id]):
                    return True
            await asyncio.sleep(FACTS_WAIT)
        return False


def _releases(
    line: BudgetLine, case_id: str, service_id: str | None, reason: str
) -> Callable[[BudgetLineState], Sequence[CaseEvent]]:
    return lambda state: decide_releases(line, state, case_id, service_id, reason)


async def record_follow_up(
    deps: Dependencies,
    cause: RecordedEvent,
    stream: str,
    fold: Fold[S],
    decide: Callable[[S], Sequence[CaseEvent]],
    not_before: Callable[[S, Sequence[CaseEvent]], datetime | None] = lambda _state, _events: None,
) -> list[RecordedEvent]:
    """Append what ``decide`` makes of ``stream``'s state (as ``fold`` keeps it: a closure
    reads every budget line, which grow all year), caused by ``cause``, unless ``cause``
    already has a follow-up on ``stream``. Dated now, yet never before ``cause`` nor before
    what ``not_before`` says the state's events it follows up were dated, given what was
    decided (a release, the reservations it releases; a cancellation, the service's booking
    or last move; a withdrawal, the referral's making or acceptance). A writer that loses a
    race decides again, after the same growing random pause as a command's
    (``pause_before``): the replicas given the same event, or a burst of commands on the
    stream, would otherwise meet again at once."""
    store = deps.store
    attempt = 0
    async with folded(store, stream, fold) as state:
        while True:
            events = decide(state.state)
            if not events:
                return []  # most budget lines, for a closure: nothing was reserved there
            # Looked up by the cause (indexed), not found in the stream's history.
            if any(
                earlier.stream == stream
                for earlier in await store.read_by_causation(cause.event_id)
            ):
                return []
            # Never before its cause, nor what it follows up: a closure, a booking, a referral
            # or a reservation may state a moment a little ahead of this clock (the skew
            # commands are allowed), and a cancellation dated before the closure that caused
            # it or the booking it calls off, a withdrawal before the referral it withdraws,
            # or a release before the reservation it releases, would show, as of that moment,
            # a case at odds.
            floor = not_before(state.state, events)
            moments = [datetime.now(UTC), cause.metadata.occurred_at]
            metadata = EventMetadata(
                source=SOURCE,
                actor=FOLLOW_UP,
                occurred_at=max(moments if floor is None else [*moments, floor]),
                correlation_id=cause.metadata.correlation_id,
                causation_id=cause.event_id,
            )
            # Ids derived from the cause and the stream: the same follow-up written twice (two
            # replicas given the same event) is one event, and the store refuses the second.
            base = uuid5(cause.event_id, stream).int & ~0xFFFF
            new = [
                NewEvent(event=event, metadata=metadata, event_id=UUID(int=base | index))
                for index, event in enumerate(events)
            ]
            try:
                return await store.append(stream, new, state.version)
            except ConcurrencyError:
                attempt += 1
                await asyncio.sleep(pause_before(attempt))
                await state.catch_up()
