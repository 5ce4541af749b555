"""Composition shared by every service process: storage, bus, relay, projections, gRPC server.

A service's ``bootstrap.start(infra, address)`` opens its own store and read models on its
``Infrastructure`` (``casetrail_platform.infrastructure``), adds
its projections and subscriptions to a ``ServiceHost``, and gets back a ``RunningService``.
Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial

import grpc
from grpc_health.v1 import health, health_pb2

from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.errors import is_outage
from casetrail_platform.bus.kafka import KafkaEventPublisher, KafkaEventSubscriber
from casetrail_platform.bus.ordering import SequenceGuard
from casetrail_platform.bus.port import BatchHandler, EventPublisher, EventSubscriber, Handler
from casetrail_platform.checkpoints import CheckpointStore
from casetrail_platform.decide import snapshots_written
from casetrail_platform.grpc_platform.server import (
    Registration,
    create_health_server,
    create_server,
)
from casetrail_platform.health import watch_issuer_keys, watch_storage
from casetrail_platform.infrastructure import (
    Infrastructure,
    open_event_store,
    open_locks,
    open_parking_lot,
    open_read_models,
)
from casetrail_platform.keys.keyring import CASE_OWNER_PREFIX
from casetrail_platform.ledger.hosting import checkpoint_record, open_ledger, run_ledger
from casetrail_platform.ledger.log import LedgerLog
from casetrail_platform.locking.port import Locks
from casetrail_platform.locking.serving import mark_serving, projection_leadership
from casetrail_platform.outbox import OutboxRelay
from casetrail_platform.parking import ParkingLot
from casetrail_platform.projections.port import Projection, ReadModelStore
from casetrail_platform.projections.progress import (
    StalledProjections,
    watch_own_projections,
    watch_projection_health,
)
from casetrail_platform.projections.runner import BusProjectionHandler, catch_up, follow
from casetrail_platform.shutdown import (
    BACKGROUND_STOP_SECONDS,
    CANCEL_SECONDS,
    CLOSE_SECONDS,
    SERVER_STOP_GRACE_SECONDS,
    within,
)
from casetrail_platform.store.port import EventStore
from casetrail_platform.telemetry.metrics import process_metrics
from events.catalog.erasure import ClientErased

log = logging.getLogger(__name__)


MIN_CLOSE_SECONDS = 0.2
"""What a close gets when the others have used up CLOSE_SECONDS."""

_Subscription = tuple[str, Handler | BatchHandler, frozenset[str] | None, SequenceGuard | None]
"""Consumer group, handler, event types wanted (``None``: all), ordering guard."""


@dataclass
class RunningService:
    name: str
    port: int
    stop: Callable[[], Awaitable[None]]
    server: grpc.aio.Server


def service_source(service: str) -> str:
    """The source of a service's own events (``casetrail/<service>``): also what ``casetrail
    tail`` records under in that service's store."""
    return f"casetrail/{service}"


class ServiceHost:
    """Runs one service: its outbox relay, projections, bus subscriptions and gRPC server."""

    def __init__(
        self,
        service: str,
        infra: Infrastructure,
        store: EventStore,
        checkpoints: CheckpointStore,
        read_models: ReadModelStore,
        close_store: Callable[[], Awaitable[None]],
        parking: ParkingLot,
        locks: Locks,
        ledger: LedgerLog,
    ) -> None:
        self.service = service
        self._parking = parking
        self.source = service_source(service)
        self.infra = infra
        self.store = store
        self.read_models = read_models
        self.locks = locks
        """Shared with the service's other replicas (``open_locks``)."""
        self._checkpoints = checkpoints
        self._close_store = close_store
        self.ledger = ledger
        self._own_projections: list[Projection] = []
        self._stalled = StalledProjections()
        """Own projections failing on something other than an outage, for their health."""
        self._subscriptions: list[_Subscription] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = [ledger.store.close]
        self._alongside: list[
            Callable[[asyncio.Event, health.aio.HealthServicer], Awaitable[None]]
        ] = []
        self._relay: OutboxRelay | None = None
        self._progress: EventSubscriber | None = None
        """Runs the subscriptions and asks the bus how far their groups have got (``caught_up``)."""

    def run_alongside(
        self, work: Callable[[asyncio.Event, health.aio.HealthServicer], Awaitable[None]]
    ) -> None:
        """Run ``work(stop, health)`` while the service runs (e.g. audit's ledger witness)."""
        self._alongside.append(work)

    def close_with(self, close: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(close)

    def project_own_events(self, projection: Projection) -> None:
        """Keep ``projection`` up to date with this service's own store."""
        self._own_projections.append(projection)

    def subscribe(self, projection: Projection) -> None:
        """Feed ``projection`` from the bus (every service's events), exactly once in effect,
        a poll's worth of each partition per read-model transaction."""
        handler: BatchHandler = BusProjectionHandler(
            self.read_models, projection, on_erased=self._forget_erased, service=self.service
        )
        self.subscribe_handler(
            projection.name, handler, event_types=projection.wanted_types, ordered=True
        )

    async def published(self, position: int) -> bool:
        """Whether the bus has acknowledged this service's events up to ``position``, waiting
        up to ``PUBLISH_WAIT_SECONDS`` (``OutboxRelay.published``; in any replica)."""
        relay = self._relay
        return relay is not None and await relay.published(position, PUBLISH_WAIT_SECONDS)

    def caught_up(
        self, projection: Projection, types: frozenset[str] | None = None
    ) -> Callable[[str], Awaitable[bool]]:
        """``caught_up(case_id)``: whether ``projection`` (subscribed with ``subscribe``) has
        applied every event of the case's partition that was on the bus when asked (``types``:
        up to the last of the case's events of those types), waiting up to
        ``FACTS_WAIT_SECONDS`` (``EventSubscriber.caught_up``)."""
        group = self._group(projection.name)

        async def caught_up(case_id: str) -> bool:
            progress = self._shared_subscriber()
            return await progress.caught_up(
                group, case_id, patience=FACTS_WAIT_SECONDS, types=types
            )

        return caught_up

    def _shared_subscriber(self) -> EventSubscriber:
        """The subscriber every subscription runs with and ``caught_up`` asks, opened once: on
        Kafka its question reads first how far the group's members in this process applied."""
        if self._progress is None:
            self._progress = self._subscriber()
            self._closers.append(self._progress.close)
        return self._progress

    def _group(self, name: str) -> str:
        return f"casetrail.{self.service}.{name}"

    def _forget_erased(self, erased: ClientErased) -> None:
        keyring = self.infra.keyring
        if keyring is not None:
            keyring.forget(erased.client_id)
            for case_id in erased.case_ids:
                keyring.forget(CASE_OWNER_PREFIX + case_id)

    def subscribe_handler(
        self,
        name: str,
        handler: Handler | BatchHandler,
        *,
        event_types: frozenset[str] | None = None,
        ordered: bool = False,
    ) -> None:
        """``event_types``: the only types ``handler`` is given (``None``: all); the bus skips
        the others without decoding them. ``ordered``: a case's events that arrive before an
        earlier one of their stream are held back until it comes (``SequenceGuard``); open
        gaps are reported as health ``casetrail.<service>.ordering``."""
        group = self._group(name)
        guard = SequenceGuard(group) if ordered else None
        self._subscriptions.append((group, handler, event_types, guard))

    async def start(
        self, address: str, registrations: Iterable[Registration], service_names: Iterable[str]
    ) -> RunningService:
        try:
            return await self._start(address, registrations, service_names)
        except BaseException:
            self._stop.set()
            await self._join_tasks()
            await self._close_all()
            raise

    async def _start(
        self, address: str, registrations: Iterable[Registration], service_names: Iterable[str]
    ) -> RunningService:
        # Marked running before anything is applied (the catch-up below runs before leadership
        # is sought): `casetrail rebuild` then refuses to reset a projection under it, and a
        # start during a rebuild waits for the rebuild to end.
        self._closers.append(await mark_serving(self.infra, self.service))
        keyring = self.infra.keyring
        if keyring is not None:
            # A KEK file others may read (or a missing previous one) fails the start.
            await asyncio.to_thread(keyring.kek.check)
        if self._own_projections:
            # Its first sample at once, so the gauges are set before the service serves.
            own = [projection.name for projection in self._own_projections]
            self._spawn(
                watch_own_projections(self.service, self.store, self.read_models, own, self._stop)
            )
        for projection in self._own_projections:
            await self._catch_up_at_start(projection)
            # Replicas share the read models: one of them follows the store (the others would
            # only find the work done); handlers that must read their own writes catch up
            # themselves, and another replica takes over when the follower stops or dies.
            self._spawn(
                self.locks.lead(
                    projection_leadership(self.service, projection.name),
                    partial(
                        follow,
                        self.store,
                        self.read_models,
                        projection,
                        linger=self.infra.projection_linger,
                        failed=partial(self._stalled.failed, projection.name),
                    ),
                    self._stop,
                )
            )
        publisher = await self._publisher()
        relay = self._relay = OutboxRelay(
            self.store,
            publisher,
            self._checkpoints,
            relay_name(self.service),
            parking=self._parking,
        )
        # One relay per store at a time, whichever replica leads; another takes over when the
        # leader stops or dies. Each replica still runs its projections and subscriptions.
        self._spawn(
            self.locks.lead(f"casetrail.{self.service}.outbox-relay", relay.run, self._stop)
        )
        for group, handler, event_types, guard in self._subscriptions:
            subscription = self._shared_subscriber().run(
                group, handler, self._stop, event_types=event_types, ordering=guard
            )
            self._spawn(subscription)
        if self.infra.verifier is None:
            raise ValueError(f"{self.service}: no token verifier configured (Infrastructure)")
        names = list(service_names)
        server, port, health_servicer = await create_server(
            address,
            registrations,
            names,
            verifier=self.infra.verifier,
            tls=self.infra.tls,
            capacity=self.infra.capacity,
            plaintext_allowed=self.infra.plaintext_allowed,
        )
        self._spawn(
            watch_outbox(relay, health_servicer, f"casetrail.{self.service}.outbox", self._stop)
        )
        read_models = self.read_models
        if self._own_projections:
            self._spawn(
                watch_projection_health(
                    self.service,
                    self.store,
                    read_models,
                    [projection.name for projection in self._own_projections],
                    self._stalled,
                    health_servicer,
                    self._stop,
                )
            )
        self._spawn(
            watch_storage(
                [self.store.last_position, lambda: read_models.get("casetrail.health", "probe")],
                health_servicer,
                f"casetrail.{self.service}.database",
                names,
                self._stop,
            )
        )
        self._spawn(
            watch_issuer_keys(
                self.infra.verifier.keys,
                health_servicer,
                f"casetrail.{self.service}.issuer",
                self._stop,
            )
        )
        await self._start_ledger(self.ledger, health_servicer)
        for work in self._alongside:
            self._spawn(work(self._stop, health_servicer))
        guards = [guard for *_, guard in self._subscriptions if guard is not None]
        if guards:
            self._spawn(
                watch_ordering(
                    guards, health_servicer, f"casetrail.{self.service}.ordering", self._stop
                )
            )
        health_server = None
        if self.infra.health_address is not None:
            health_server, health_port = await create_health_server(
                self.infra.health_address, health_servicer
            )
            await health_server.start()
            log.info("%s answers health probes in plaintext on port %d", self.service, health_port)
        await server.start()
        log.info("%s serving on port %d", self.service, port)

        async def stop() -> None:
            await health_servicer.enter_graceful_shutdown()
            await server.stop(SERVER_STOP_GRACE_SECONDS)
            if health_server is not None:
                await health_server.stop(None)
            self._stop.set()
            await self._join_tasks()
            await self._close_all()

        return RunningService(self.service, port, stop, server)

    async def _catch_up_at_start(self, projection: Projection) -> None:
        """Catch ``projection`` up before serving. An outage fails the start (the database
        is away for every part of it); any other failure (a bug, an event it cannot apply)
        leaves the projection stalled, to its follower's retries and its health entry's
        NOT_SERVING, and the start goes on: failing it would keep every other projection,
        subscription and call of the service away, on every restart, for one event."""
        try:
            await catch_up(self.store, self.read_models, projection)
        except Exception as error:
            if is_outage(error):
                raise
            # By type and place, as the follower logs: the message may quote the event.
            log.error(
                "%s: projection %s not caught up at start; serving, its follower retries: %s",
                self.service,
                projection.name,
                failure_text(error),
            )
            self._stalled.failed(projection.name)

    async def _start_ledger(
        self, ledger: LedgerLog, health_servicer: health.aio.HealthServicer
    ) -> None:
        record = checkpoint_record(self.infra, self.service)
        ledger.publish_to(record)
        self._closers.append(record.stop)
        self._spawn(
            run_ledger(
                ledger,
                self.store,
                health_servicer,
                f"casetrail.{self.service}.ledger",
                self._stop,
                sign_every=self.infra.ledger_sign_every,
            )
        )

    async def _close_all(self) -> None:
        if self._relay is not None:
            # Its run ends the refill; a relay stopped before it ran (a start failing after
            # making it: the port taken) would leave the bus's barriers waiting for good.
            self._relay.end_refill()
        # Every close shares CLOSE_SECONDS: a frozen Kafka or PostgreSQL must not keep the
        # process past its grace period. One left behind loses nothing acknowledged (see
        # casetrail_platform/shutdown.py); each later one still gets a short try, so the
        # SQLite files are closed after a Kafka producer that hung.
        deadline = asyncio.get_running_loop().time() + CLOSE_SECONDS
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (getattr(close, "__qualname__", "close"), close) for close in reversed(self._closers)
        ]
        self._closers.clear()
        steps += [
            ("locks", self.locks.close),
            ("read models", self.read_models.close),
            # Snapshots under way are written before the store goes (a stop costs none of them).
            ("snapshots", partial(snapshots_written, self.store)),
            ("event store", self._close_store),
        ]
        for what, close in steps:
            remaining = deadline - asyncio.get_running_loop().time()
            await within(f"{self.service}: {what}", close(), max(remaining, MIN_CLOSE_SECONDS))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # By type and place, no traceback: the message may quote what it failed on.
                log.error("%s: background task failed: %s", self.service, failure_text(error))

        self._tasks.append(asyncio.create_task(guarded()))

    async def _join_tasks(self) -> None:
        done, pending = (
            await asyncio.wait(self._tasks, timeout=BACKGROUND_STOP_SECONDS)
            if self._tasks
            else (set(), set())
        )
        for task in pending:
            task.cancel()
        if pending:
            await within(
                f"{self.service}: {len(pending)} cancelled background tasks",
                asyncio.wait(pending),
                CANCEL_SECONDS,
            )
        del done

    async def _publisher(self) -> EventPublisher:
        if self.infra.inprocess_bus is not None:
            return self.infra.inprocess_bus.publisher(self.infra.topic)
        assert self.infra.kafka is not None, "Infrastructure needs a bus"
        publisher = KafkaEventPublisher(self.infra.kafka, topic=self.infra.topic)
        await publisher.start()
        self._closers.append(publisher.stop)
        return publisher

    def _subscriber(self) -> EventSubscriber:
        if self.infra.inprocess_bus is not None:
            return self.infra.inprocess_bus.subscriber(
                self.infra.registry, self.infra.topic, linger=self.infra.projection_linger
            )
        assert self.infra.kafka is not None, "Infrastructure needs a bus"
        return KafkaEventSubscriber(
            self.infra.kafka, self.infra.registry, topic=self.infra.topic, topics=self.infra.topics
        )


PUBLISH_WAIT_SECONDS = 5.0
"""Longest a command whose events other services decide on at once (coordination's assignments
and transfers) waits for the bus to acknowledge them before answering (README, "A transfer not
delivered yet")."""
FACTS_WAIT_SECONDS = 5.0
"""Longest a supervisor's closure or reopening waits for the service's policy facts (an
assigned worker's planning command, for planning's case view) to apply the case's events
already on the bus, before it is answered UNAVAILABLE ``FACTS_NOT_CAUGHT_UP``."""

OUTBOX_STALL_SECONDS = 30.0
"""A publish waiting this long for the bus, or failing repeatedly, marks the outbox unhealthy."""


async def watch_outbox(
    relay: OutboxRelay,
    health_servicer: health.aio.HealthServicer,
    health_name: str,
    stop: asyncio.Event,
    *,
    every: float = 2.0,
) -> None:
    """Report the relay as its own health entry (``casetrail.<service>.outbox``).

    The service itself stays SERVING while the bus is down, because commands are still
    accepted into the store and will be published later; the outbox entry tells operators
    (and alerting) that events are piling up, or that records are parked (refused by the bus
    for good, or held behind one of their case) until an operator retries them.
    """
    serving = health_pb2.HealthCheckResponse.SERVING
    stalled = health_pb2.HealthCheckResponse.NOT_SERVING
    reported = None
    while not stop.is_set():
        try:
            status = await relay.status()
        except Exception as error:  # the store is away: nothing is being published either
            healthy, lag = False, "an unknown number of"
            why = f"{type(error).__name__}: {error}"
        else:
            process_metrics().observe_relay(status)
            waiting = status.publish_waiting_seconds or 0.0
            healthy = (
                status.consecutive_failures == 0
                and waiting < OUTBOX_STALL_SECONDS
                and status.parked == 0
            )
            lag = str(status.lag + status.parked)
            why = status.last_error or (
                f"{status.parked} records parked, {status.parked_reason};"
                " `casetrail parked list` shows them"
                if status.parked
                else f"a publish has waited {waiting:.0f} s"
            )
        if healthy != reported:
            if not healthy:
                log.warning("%s: %s events not yet on the bus (%s)", health_name, lag, why)
            await health_servicer.set(health_name, serving if healthy else stalled)
            reported = healthy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def watch_ordering(
    guards: list[SequenceGuard],
    health_servicer: health.aio.HealthServicer,
    health_name: str,
    stop: asyncio.Event,
    *,
    every: float = 2.0,
) -> None:
    """Report the service's bus consumers as ``casetrail.<service>.ordering``: NOT_SERVING
    while one of them has held a case's events back for longer than the guard's
    ``report_after`` because an earlier event of their stream is missing."""
    serving = health_pb2.HealthCheckResponse.SERVING
    stalled = health_pb2.HealthCheckResponse.NOT_SERVING
    reported = None
    while not stop.is_set():
        overdue = sum(guard.status().overdue_gaps for guard in guards)
        healthy = overdue == 0
        if healthy != reported:
            if not healthy:
                log.warning("%s: %d case streams miss an event", health_name, overdue)
            await health_servicer.set(health_name, serving if healthy else stalled)
            reported = healthy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def host_for(infra: Infrastructure, service: str) -> ServiceHost:
    """Open the service's storage and return a host ready for projections and subscriptions."""
    store, checkpoints, close_store = await open_event_store(infra, service)
    parking = await open_parking_lot(infra, service, store)
    read_models = await open_read_models(infra, service)
    ledger = await open_ledger(infra, service)
    return ServiceHost(
        service,
        infra,
        store,
        checkpoints,
        read_models,
        close_store,
        parking,
        # Never locks of its own: the embedded store honours only its own (StreamVersion.lock),
        # so an erasure and an opening decided with others would not meet.
        open_locks(infra, store),
        ledger,
    )


def relay_name(service: str) -> str:
    """The name of a service's outbox relay (its checkpoint and parked records)."""
    return f"{service}-outbox"
