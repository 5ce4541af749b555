"""The Faust topology: case events -> per-case table -> worker facts -> per-worker tables.

::

    casetrail.case-events (key: case id, CloudEvents binary mode)
        |  agent track-cases: decode, fold into `cases` (table keyed by case id; co-partitioned
        |  with the source topic, so each case lives with its events)
        v
    <app id>-worker-facts (internal topic, key: worker id)   <- the repartition step
        |  agent count-caseloads
        v
    `held-cases` ("<worker id>/<case id>" -> its follow-up due date: one record per case held)
    `contacts-per-day` (worker id -> contacts logged, tumbling one-day windows, event time)

Every table has a compacted changelog topic that Faust creates through its admin client (the
broker refuses automatic topic creation, so nothing else could). Tables are kept in memory
(``memory://``; rocksdb is not installed): on start Faust reads the changelogs back, so the
state survives restarts as long as the topics do. After each rebalance they hold this
process's assignment only (``tables.AssignedTable``).

With ``exactly_once`` (the default) each partition's table changes, the facts it sent and its
consumed offsets commit in one Kafka transaction (``transactions``: Faust alone would put a
fact in the transaction of its destination partition). Repeats (a relay re-publishing, or the
events read again after a crash) are recognised in the per-case table by their stream sequence
and change nothing there; each tells its case's worker facts again (``domain.restated``), as
under ``at_least_once`` a crash can keep a table change and lose the facts it sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, cast

import faust
from faust import StreamT
from faust.types import TP, TransportT

from casetrail_platform import limits
from casetrail_platform.bus.deadletter import failure_text
from casetrail_platform.bus.kafka_security import KafkaSecurity
from casetrail_platform.bus.topics import create_topics, ensure_topics
from casetrail_platform.shutdown import watchdog
from events.catalog_registry import default_registry
from events.envelope import RecordedEvent
from events.registry import EventRegistry
from services.caseload.decoding import tracked_event
from services.caseload.domain import (
    Applied,
    CaseState,
    ContactMade,
    Holds,
    Releases,
    WorkerFact,
    apply,
    count_contact,
    held_entry,
    held_key,
    restated,
)
from services.caseload.readiness import Readiness
from services.caseload.recording import AccessRecorder
from services.caseload.routing import OwnerRouter
from services.caseload.server_log import server_logger
from services.caseload.settings import (
    CaseloadSettings,
    require_https_beyond_loopback,
    require_tls_to_audit,
)
from services.caseload.tables import AssignedTable
from services.caseload.topics import internal_topics
from services.caseload.transactions import SourcePartitionTransport

log = logging.getLogger(__name__)

HELD_CASES = "held-cases"
"""The table the caseload views read, whose partitions say which process holds which worker."""
CONTACT_WINDOW = timedelta(days=1)
CONTACT_WINDOW_EXPIRES = timedelta(days=35)
"""Days of contact counts kept (the window store drops older ones)."""


class FactRecord(faust.Record, serializer="json", namespace="casetrail.caseload.WorkerFact"):
    """A worker fact as it travels on the internal topic (see ``domain.WorkerFact``)."""

    kind: str
    worker_id: str
    case_id: str
    follow_up_due: str | None = None
    occurred_at: float = 0.0
    """When the contact happened (epoch seconds): the contact windows run on event time."""
    event_id: str = ""
    """The contact's event, counted once however often the fact is told."""

    @classmethod
    def of(cls, fact: WorkerFact) -> FactRecord:
        match fact:
            case Holds(follow_up_due=due):
                text = None if due is None else due.isoformat()
                return cls("holds", fact.worker_id, fact.case_id, follow_up_due=text)
            case Releases():
                return cls("releases", fact.worker_id, fact.case_id)
            case ContactMade(occurred_at=moment, event_id=event_id):
                return cls(
                    "contact",
                    fact.worker_id,
                    fact.case_id,
                    occurred_at=moment.timestamp(),
                    event_id=event_id,
                )
        raise TypeError(f"not a worker fact: {fact!r}")


@dataclass
class Counters:
    """What the case-event agent did, for health checks, tests and the benchmark."""

    messages: int = 0
    applied: int = 0
    skipped: int = 0
    """Untracked types and repeats, and the undecodable and failed events."""
    undecodable: int = 0
    failed: int = 0
    """Tracked events whose fold raised (``CaseloadApp.fold``): logged and skipped."""
    facts_sent: int = 0
    facts_applied: int = 0
    """Worker facts applied to the worker tables (equal to ``facts_sent`` once caught up)."""


class CaseloadApp(faust.App):
    """The Faust application; build it with ``build_app``."""

    settings: CaseloadSettings
    registry: EventRegistry
    counters: Counters
    cases: Any
    """faust Table: case id -> ``CaseState.to_json()``."""
    held_cases: Any
    """faust Table: ``domain.held_key`` (worker and case) -> ``domain.held_entry``."""
    contacts: Any
    """faust windowed table (WindowWrapper): worker id -> contacts logged per UTC day."""
    extra_internal_topics: list[Any]
    """Internal topics besides the changelogs (the worker-fact repartition topic)."""
    access_recorder: AccessRecorder | None = None
    """Where the web views record their reads (set with the views)."""
    processing: asyncio.Lock
    """Held while a case event is processed; a transaction commits between two events
    (``transactions``)."""
    readiness: Readiness
    """Whether the tables hold this process's whole assignment (``ready``)."""

    def _new_transport(self) -> TransportT:
        # Faust has no setting for its transaction manager; the transport names it.
        return SourcePartitionTransport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        # The case-event topic is the platform's; make sure it exists with the partition
        # count our co-partitioned table assumes before the consumer subscribes to it. Our
        # internal topics too: see ``topics`` for the race this avoids.
        await ensure_topics(self.settings.kafka, self.settings.topics)
        await create_topics(self.settings.kafka, internal_topics(self))
        await super().on_first_start()

    stop_deadline: float | None = None
    """Seconds from the start of a stop to the end of the process, whatever hangs (the worker
    process sets it; ``None``: no limit, an app started in a test)."""

    async def on_stop(self) -> None:
        if self.stop_deadline is not None:
            # A frozen broker can hold Faust's last commit and its group leave for minutes;
            # the chart's grace period is shorter (see __main__ for why ending is safe).
            watchdog(self.stop_deadline)
        await super().on_stop()
        if self.access_recorder is not None:
            await self.access_recorder.close()
        await cast(OwnerRouter, self.router).close()

    def on_rebalance_start(self) -> None:
        # Told first: the views stop answering before anything of the rebalance happens.
        self.readiness.rebalance_started()
        super().on_rebalance_start()

    async def _on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # Before Faust drops the revoked partitions from the tables and restores the new ones.
        self.readiness.assigned()
        await super()._on_partitions_assigned(assigned, generation_id)

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self.readiness.recovered()

    def ready(self) -> bool:
        """Whether the tables are recovered from their changelogs for the current assignment
        and being kept current: not from the start of a rebalance until its recovery ends
        (``readiness``)."""
        return self.readiness.ready

    def decode(self, message: Any) -> RecordedEvent | None:
        """The case event in ``message`` if it is one we track; ``None`` (logged when the
        message is broken) otherwise. The services' own consumers dead-letter broken
        messages, so here they are only skipped."""
        headers: Sequence[tuple[str, bytes | None]] = list(message.headers or ())
        try:
            return tracked_event(message.key, headers, message.value, self.registry)
        except Exception as error:  # whatever breaks decoding is the message's fault
            self.counters.undecodable += 1
            log.warning(
                "caseload: skipping undecodable message %s/%d@%d: %s",
                message.topic,
                message.partition,
                message.offset,
                failure_text(error),
            )
            return None

    def fold(
        self, message: Any, recorded: RecordedEvent
    ) -> tuple[CaseState | None, Applied | None] | None:
        """The case's state before ``recorded`` and ``apply``'s answer for it; ``None``
        (counted as ``failed`` and logged) when folding it raises. The fold is pure code, so
        an error there is the event's or a bug's, the same at every retry: left to Faust it
        crashed the agent, which Faust restarted past the message, counted nowhere."""
        try:
            stored = self.cases.get(recorded.subject)
            state = None if stored is None else CaseState.from_json(stored)
            return state, apply(state, recorded)
        except Exception as error:  # one event skipped, not every later one
            self.counters.failed += 1
            log.error(
                "caseload: skipping case event %s/%d@%d, whose fold failed: %s",
                message.topic,
                message.partition,
                message.offset,
                failure_text(error),
            )
            return None


class CaseloadWorker(faust.Worker):
    """The worker ``python -m services.caseload worker`` runs: refuses plain HTTP beyond
    loopback (``settings.require_https_beyond_loopback``), and plain gRPC to audit beyond it
    (``settings.require_tls_to_audit``), before anything starts."""

    def __init__(self, app: CaseloadApp, *services: Any, **options: Any) -> None:
        # Faust's worker command has applied --web-bind (the chart's 0.0.0.0) by now, and
        # nothing has started. A SystemExit, not the ValueError: Faust's command prints any
        # Exception with a traceback; this one line reaches __main__, which prints it.
        if app.conf.web_enabled:
            try:
                require_https_beyond_loopback(
                    str(app.conf.web_bind),
                    app.settings.web_tls,
                    plaintext_allowed=app.settings.plaintext_allowed,
                )
                require_tls_to_audit(
                    app.settings.audit_address,
                    app.settings.audit_tls,
                    plaintext_allowed=app.settings.audit_plaintext_allowed,
                )
            except ValueError as refused:
                raise SystemExit(f"caseload settings: {refused}") from None
        super().__init__(app, *services, **options)


def broker_credentials(security: KafkaSecurity) -> Any:
    """Faust's form of the platform's Kafka security settings (``None``: plaintext)."""
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            ssl_context=security.ssl_context(),
            mechanism=security.sasl_mechanism,
        )
    if security.uses_tls:
        return faust.SSLCredentials(security.ssl_context())
    return None


def build_app(settings: CaseloadSettings, registry: EventRegistry | None = None) -> CaseloadApp:
    """A new, unstarted caseload app. Start it with ``python -m services.caseload worker``
    (``__main__``) or ``await app.start()`` (tests, benchmarks)."""
    app = CaseloadApp(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_client_id=f"{settings.kafka.client_id}-caseload",
        broker_credentials=broker_credentials(settings.kafka.security),
        store="memory://",
        # Its memory store drops a revoked partition's keys only if it knows their partition
        # (``tables``).
        Table=AssignedTable,
        datadir=str(settings.data_dir),
        autodiscover=False,
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval,
        broker_session_timeout=settings.session_timeout,
        # Like the platform's producers: a few ms of linger puts the changelog and fact
        # records into fewer produce requests (Faust's default is no linger).
        producer_linger=settings.kafka.linger_ms / 1000,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        # Its changelogs and repartition topic are created by this processor (never by the
        # Topic Operator): as replicated as every other topic of the deployment.
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        # The leader topic only serves @app.task(on_leader=True) and timers; we have none.
        topic_disable_leader=True,
        web_enabled=settings.web_enabled,
        # Only casetrail's own views (services/caseload/web.py): Faust's built-in ones would
        # serve the tables (/table/cases/<id>/: who holds a case, its follow-up dates) with
        # no token and nothing recorded in audit.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_ssl_context=None if settings.web_tls is None else settings.web_tls.ssl_context(),
        Worker=CaseloadWorker,
        # Forwards a per-worker view to its owner over the deployment's TLS (``routing``).
        Router=OwnerRouter,
        # aiohttp's keep-alive timer runs from the connection, and from each answer, until a
        # request's line and headers are whole (bytes arriving do not restart it): by default
        # an hour, so a client sending a byte now and then held a connection that long. Its
        # lingering time bounds the rest of a body the views never read (already 10 s; set so
        # that one constant says it). Its log of a request it cannot read or answer never
        # repeats the request (``server_log``: a header, a bearer token among them).
        web_application_options={
            "handler_args": {
                "keepalive_timeout": limits.HTTP_REQUEST_SECONDS,
                "lingering_time": limits.HTTP_REQUEST_SECONDS,
                "logger": server_logger(),
            }
        },
    )
    app.settings = settings
    app.registry = registry or default_registry()
    app.counters = Counters()
    app.processing = asyncio.Lock()
    app.readiness = Readiness()
    _add_topology(app)
    if settings.web_enabled:
        from services.caseload.web import add_views

        add_views(app)
    return app


def _add_topology(app: CaseloadApp) -> None:
    partitions = app.settings.partitions
    source = app.topic(
        app.settings.topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    facts = app.topic(
        f"{app.settings.app_id}-worker-facts",
        internal=True,
        partitions=partitions,
        key_type=str,
        # As the tables' changelogs serialise a key, which Faust's view routing hashes
        # (``table_route``): a raw key put a worker's records on one partition and routed
        # their views to the process owning another, which answered them empty.
        key_serializer="json",
        value_type=FactRecord,
    )
    app.extra_internal_topics = [facts]
    app.cases = app.Table("cases", partitions=partitions)
    # One record per case held, never a worker's whole caseload as one value (``held_key``).
    # Written while a fact keyed by its worker is processed, so every record of a worker
    # is on that worker's partition.
    app.held_cases = app.Table(HELD_CASES, partitions=partitions)
    app.contacts = (
        # Per worker and day, the contacts' event ids (domain.count_contact).
        app.Table("contacts-per-day", default=dict, partitions=partitions)
        .tumbling(CONTACT_WINDOW, expires=CONTACT_WINDOW_EXPIRES, key_index=True)
        # At class level a faust Record attribute is its field descriptor, not a float.
        .relative_to_field(FactRecord.occurred_at)  # type: ignore[arg-type]
    )
    counters = app.counters

    async def track_cases(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            counters.messages += 1
            recorded = app.decode(event.message)
            if recorded is None:
                counters.skipped += 1
                continue
            folded = app.fold(event.message, recorded)
            if folded is None:
                counters.skipped += 1
                continue
            state, applied = folded
            if applied is None:
                counters.skipped += 1
                # A repeat may follow a crash that kept its table change and lost its facts
                # (at_least_once): told again, they bring the worker side to the case's state.
                if told := restated(state, recorded):
                    async with app.processing:
                        await send_facts(told)
                continue
            async with app.processing:  # one transaction holds all of it (``transactions``)
                app.cases[recorded.subject] = applied.state.to_json()
                await send_facts(applied.facts)
            counters.applied += 1

    async def send_facts(told: list[WorkerFact]) -> None:
        for fact in told:
            await facts.send(key=fact.worker_id, value=FactRecord.of(fact))
        counters.facts_sent += len(told)

    async def count_caseloads(stream: StreamT[FactRecord]) -> None:
        async for fact in stream:
            worker = fact.worker_id
            if fact.kind == "holds":
                due = fact.follow_up_due
                held = Holds(worker, fact.case_id, None if due is None else date.fromisoformat(due))
                key, entry = held_key(worker, fact.case_id), held_entry(held)
                # A fact told again (``restated``) writes nothing more to the changelog.
                if app.held_cases.get(key) != entry:
                    app.held_cases[key] = entry
            elif fact.kind == "releases":
                key = held_key(worker, fact.case_id)
                if key in app.held_cases:
                    del app.held_cases[key]
            elif fact.kind == "contact":
                # Not ``+= 1``: under at_least_once a fact may come again after a crash.
                # A fact sent before the ids were has none: its own (unique) placeholder.
                told = fact.event_id or f"{fact.case_id}@{fact.occurred_at}"
                app.contacts[worker] = count_contact(app.contacts[worker].value(), told)
            else:
                log.warning("caseload: ignoring worker fact of unknown kind %r", fact.kind)
            counters.facts_applied += 1

    app.agent(source, name="track-cases")(track_cases)
    app.agent(facts, name="count-caseloads")(count_caseloads)
