"""What a service process runs on: where its data lives (SQLite files or PostgreSQL schemas),
which bus carries events (in process or Kafka), its token verifier and TLS, and the opening of
its own stores on them (``ServiceHost`` in ``hosting`` composes a service from these).
Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path

from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings
from casetrail_platform.checkpoints import CheckpointStore
from casetrail_platform.grpc_platform.capacity import Capacity
from casetrail_platform.identity.tls import ServerTls
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.keys.hosting import protected_registry
from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import KeyEncryptionKey
from casetrail_platform.ledger.keys import CheckpointSigner
from casetrail_platform.locking.port import Locks
from casetrail_platform.parking import ParkingLot
from casetrail_platform.policy.home_agency import DEFAULT_HOME_AGENCY
from casetrail_platform.private_files import private_directory
from casetrail_platform.projections.port import ReadModelStore
from casetrail_platform.store.port import EventStore
from events.catalog_registry import default_registry
from events.registry import EventRegistry
from events.topics import DEFAULT_CASE_EVENTS_TOPIC


@dataclass(frozen=True)
class Infrastructure:
    """Where a service keeps its data and which bus carries events between services.

    Embedded (the default): SQLite files under ``data_dir/<service>/`` and one in-process bus
    shared by the services of this process. Production: one PostgreSQL schema per service
    and Kafka. ``verifier`` checks every call's bearer token (a service does not start without
    one); ``tls`` secures the gRPC ports.
    """

    data_dir: Path
    inprocess_bus: InProcessBus | None = None
    postgres_dsn: str | None = None
    kafka: KafkaSettings | None = None
    topic: str = DEFAULT_CASE_EVENTS_TOPIC
    topics: TopicSettings | None = None
    """How the distributed backend creates missing topics (partitions, replication); ``None``:
    the development defaults for ``topic``."""
    registry: EventRegistry = field(default_factory=default_registry)
    verifier: TokenVerifier | None = None
    tls: ServerTls | None = None
    plaintext_allowed: bool = False
    """Whether a gRPC port without ``tls`` may listen beyond loopback
    (``CASETRAIL_GRPC_ALLOW_PLAINTEXT``: a service mesh terminates mutual TLS in front)."""
    projection_linger: float = 0.02
    """Seconds a projection waits after new events for more before applying them: read
    models trail commands by that much at most, and under load one read-model transaction
    covers many events instead of one each (bench/RESULTS.md, issue 4)."""
    agency: str = "example-agency"
    """Names each service's ledger: origin ``casetrail/<agency>/<service>``."""
    home_agency: str = DEFAULT_HOME_AGENCY
    """The agency whose staff the services serve (``CASETRAIL_HOME_AGENCY``,
    ``policy.home_agency``): every access decision's, and coordination's agency file's id."""
    time_zone: tzinfo = UTC
    """The agency's time zone: "today" (ages, licences, dates of birth) is its date
    (``casetrail_platform.ages``; ``CASETRAIL_AGENCY_TIME_ZONE``)."""
    ledger_sign_every: float = 5.0
    """Seconds between signed checkpoints of a service's ledger (when it has grown)."""
    ledger_signer: Callable[[str], CheckpointSigner] | None = None
    """The key port for a log's origin; ``None``: a key file generated in the data dir."""
    ledger_public_keys: Path | None = None
    """The services' published ledger keys, one verifier key per line (``casetrail ledger
    keys``): the keys audit witnesses the logs with. ``None``: each service's key port, or
    the ``ledger.pub`` it wrote in the data dir (embedded: one data dir for all)."""
    health_address: str | None = None
    """Where a service also answers grpc.health.v1 alone, in plaintext (``None``: nowhere):
    with ``tls`` on the gRPC port, Kubernetes' gRPC probes need it (one service per process)."""
    seal_sensitive: bool = True
    """Whether sensitive fields are sealed with per-client keys before they are stored
    (``casetrail_platform.keys``; README "Erasure and keys"). Off only for comparisons (bench/)."""
    capacity: Capacity = field(default_factory=Capacity)
    """How many casetrail calls each gRPC server answers at once (``CASETRAIL_GRPC_MAX_CALLS``,
    ``CASETRAIL_GRPC_MAX_STREAMS``); the ones over are refused ``RESOURCE_EXHAUSTED``."""
    key_encryption_key: KeyEncryptionKey | None = None
    """The agency KEK (a KMS adapter in production); ``None``: the file named by
    ``CASETRAIL_KEY_ENCRYPTION_KEY_FILE``, else one generated under ``data_dir/keys/``."""

    def __post_init__(self) -> None:
        if self.seal_sensitive and self.registry.protection is None:
            registry = protected_registry(
                self.registry, self.data_dir, self.postgres_dsn, self.key_encryption_key
            )
            object.__setattr__(self, "registry", registry)

    @property
    def keyring(self) -> ClientKeyring | None:
        """The clients' data keys (``None`` when sensitive fields are not sealed)."""
        protection = self.registry.protection
        return None if protection is None else protection.keyring

    @classmethod
    def embedded(
        cls,
        data_dir: Path,
        bus: InProcessBus | None = None,
        *,
        verifier: TokenVerifier | None = None,
        tls: ServerTls | None = None,
    ) -> Infrastructure:
        return cls(
            data_dir=data_dir, inprocess_bus=bus or InProcessBus(), verifier=verifier, tls=tls
        )

    @classmethod
    def distributed(
        cls,
        data_dir: Path,
        postgres_dsn: str,
        kafka: KafkaSettings,
        topic: str | TopicSettings = "",
        *,
        verifier: TokenVerifier | None = None,
        tls: ServerTls | None = None,
    ) -> Infrastructure:
        """``topic``: the case-event topic's name (development settings for the topics it
        creates), or the topics' settings (``TopicSettings.from_env``)."""
        settings = (
            topic
            if isinstance(topic, TopicSettings)
            else TopicSettings(case_events_topic=topic or DEFAULT_CASE_EVENTS_TOPIC)
        )
        return cls(
            data_dir=data_dir,
            postgres_dsn=postgres_dsn,
            kafka=kafka,
            topic=settings.case_events_topic,
            topics=settings,
            verifier=verifier,
            tls=tls,
        )

    def service_dir(self, service: str) -> Path:
        return private_directory(self.data_dir / service)


async def open_event_store(
    infra: Infrastructure, service: str
) -> tuple[EventStore, CheckpointStore, Callable[[], Awaitable[None]]]:
    """The service's own event store, its checkpoint store, and how to close both."""
    if infra.postgres_dsn is not None:
        from casetrail_platform.store.postgres import PostgresEventStore
        from casetrail_platform.store.postgres_checkpoints import PostgresCheckpointStore

        schema = f"{service}_events"
        pg_store = await PostgresEventStore.connect(
            infra.postgres_dsn, infra.registry, schema=schema
        )
        checkpoints = await PostgresCheckpointStore.connect(infra.postgres_dsn, schema=schema)

        async def close_pg() -> None:
            await checkpoints.close()
            await pg_store.close()

        return pg_store, checkpoints, close_pg
    from casetrail_platform.store.sqlite import SqliteEventStore
    from casetrail_platform.store.sqlite_checkpoints import SqliteCheckpointStore

    sqlite_store = await SqliteEventStore.open(
        infra.service_dir(service) / "events.db", infra.registry
    )
    return sqlite_store, SqliteCheckpointStore(sqlite_store), sqlite_store.close


async def open_parking_lot(infra: Infrastructure, service: str, store: EventStore) -> ParkingLot:
    """Where the service's relay parks records the bus refuses for good: beside its checkpoint
    (the same PostgreSQL schema, or the SQLite file of ``store``)."""
    if infra.postgres_dsn is not None:
        from casetrail_platform.store.postgres_parking import PostgresParkingLot

        return await PostgresParkingLot.connect(infra.postgres_dsn, schema=f"{service}_events")
    from casetrail_platform.store.sqlite import SqliteEventStore
    from casetrail_platform.store.sqlite_parking import SqliteParkingLot

    if not isinstance(store, SqliteEventStore):
        raise TypeError(f"no parking lot for a {type(store).__name__}")
    return SqliteParkingLot(store)


async def open_read_models(infra: Infrastructure, service: str) -> ReadModelStore:
    if infra.postgres_dsn is not None:
        from casetrail_platform.projections.postgres import PostgresReadModelStore

        return await PostgresReadModelStore.connect(
            infra.postgres_dsn, schema=f"{service}_read_models"
        )
    from casetrail_platform.projections.sqlite import SqliteReadModelStore

    # Fed only from the service's own store and the in-process bus (which re-delivers everything
    # on start), an embedded read model can be rebuilt from its own tracking after a power cut.
    return SqliteReadModelStore(
        infra.service_dir(service) / "read-models.db",
        fsync_each_commit=infra.inprocess_bus is None,
    )


def open_locks(infra: Infrastructure, store: EventStore) -> Locks:
    """Locks shared by every process of a service: PostgreSQL advisory locks on the
    distributed backend (any number of replicas), asyncio locks on the embedded one: the
    embedded store's own, which its appends honour (``StreamVersion.lock``)."""
    if infra.postgres_dsn is not None:
        from casetrail_platform.locking.postgres import PostgresLocks

        return PostgresLocks(infra.postgres_dsn)
    from casetrail_platform.store.sqlite import SqliteEventStore

    if not isinstance(store, SqliteEventStore):
        raise TypeError(f"no embedded locks for a {type(store).__name__}")
    return store.locks
