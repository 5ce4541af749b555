"""Settings of the caseload stream processor, read from the environment by ``__main__``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path

from casetrail_platform.ages import agency_time_zone
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings
from casetrail_platform.grpc_platform.server import allow_plaintext, require_tls_beyond_loopback
from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.identity.tls import (
    ALLOW_PLAINTEXT as GRPC_ALLOW_PLAINTEXT,
)
from casetrail_platform.identity.tls import (
    ClientTls,
    ServerTls,
    require_tls_beyond_loopback_target,
)
from casetrail_platform.typed_numbers import whole_number
from events.topics import DEFAULT_CASE_EVENTS_TOPIC, check_topic_name

DEFAULT_APP_ID = "casetrail-caseload-v2"
"""v2: a worker's caseload is one record per case held (``domain.held_key``), no longer one
value per worker. A new id, so an upgraded worker builds its tables again from the case
events (kept forever) instead of going on from the old group's offsets with no cases held
(README, "Upgrading")."""
DEFAULT_WEB_PORT = 6066
PROCESSING_GUARANTEES = ("exactly_once", "at_least_once")
SESSION_TIMEOUT_RANGE = range(6, 91)
"""Seconds a consumer's session may last: a broker refuses less than 6 by default
(``group.min.session.timeout.ms``), and Faust refuses more than its request timeout (90 s,
``broker_request_timeout``) when it builds the consumer, so the worker would fail only then."""
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
ALLOW_PLAINTEXT = "CASETRAIL_CASELOAD_ALLOW_PLAINTEXT"
"""``1``: the views may serve plain HTTP beyond loopback (a mesh or proxy serves TLS in front;
the chart sets it exactly when it sets ``CASETRAIL_GRPC_ALLOW_PLAINTEXT``); ``0`` or unset:
without a certificate they listen on loopback only."""


def require_https_beyond_loopback(
    bind: str, tls: ServerTls | None, *, plaintext_allowed: bool
) -> None:
    """``PlaintextRefused`` (a ``ValueError``) for plain HTTP on ``bind`` other than loopback
    without ``ALLOW_PLAINTEXT``: every view but the status takes a bearer token. The gRPC
    servers' rule, with the views' own setting."""
    require_tls_beyond_loopback(
        bind,
        tls,
        plaintext_allowed=plaintext_allowed,
        listener="the caseload views",
        setting=ALLOW_PLAINTEXT,
        terminated_by="a service mesh or proxy serves TLS in front of them",
        certificate_from="CASETRAIL_TLS_CERT/_KEY",
    )


def require_tls_to_audit(
    address: str | None, tls: ClientTls | None, *, plaintext_allowed: bool
) -> None:
    """``PlaintextRefused`` (a ``ValueError``) for audit at ``address`` beyond loopback without
    ``tls`` (``CASETRAIL_TLS_CA``) unless ``GRPC_ALLOW_PLAINTEXT``: every view's read is
    recorded there with its reader's bearer token (``recording``). Every client's rule."""
    if address is not None:
        require_tls_beyond_loopback_target(address, tls, plaintext_allowed=plaintext_allowed)


@dataclass(frozen=True, slots=True)
class CaseloadSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topic: str = DEFAULT_CASE_EVENTS_TOPIC
    partitions: int = TopicSettings().partitions
    """Must equal the case-event topic's partition count: the per-case table is
    co-partitioned with it. Start-up refuses a topic with another count."""
    replication_factor: int = TopicSettings().replication_factor
    min_insync_replicas: int = TopicSettings().min_insync_replicas
    """Of every topic this processor creates when missing: the case events (as the services
    would) and its internal ones (changelogs, repartition)."""
    app_id: str = DEFAULT_APP_ID
    """Faust application id: the consumer group and the prefix of its internal topics."""
    data_dir: Path = Path("var/caseload")
    """Faust's local directory. Tables live in memory (``memory://``: rocksdb is not
    installed) and are rebuilt from their changelog topics on start."""
    processing_guarantee: str = "exactly_once"
    """Kafka transactions make table changes, worker facts and consumed offsets commit
    together, so a crash can neither double-count nor drop a fact. ``at_least_once`` has no
    transactions: a crash can keep a case's table change and lose its facts; the event read
    again is then a repeat, which tells its case's facts again (``domain.restated``), so
    nothing is lost there either (README, "How it works")."""
    commit_interval: float = 1.0
    """Seconds between commits; with exactly-once, facts reach the worker tables only once
    their transaction commits, so this bounds how stale a caseload can be."""
    session_timeout: int = 15
    """Seconds without a heartbeat after which Kafka takes a worker's partitions to the
    others: how long a worker killed -9 (or a lost node) leaves its cases unprocessed. Faust's
    own default is 60; heartbeats come from the consumer's thread, so a busy event loop does
    not miss them."""
    web_enabled: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = DEFAULT_WEB_PORT
    web_tls: ServerTls | None = None
    """HTTPS for the web views (``CASETRAIL_TLS_CERT``/``_KEY``, as the gRPC servers'): every
    request carries a bearer token, which plain HTTP beyond the pod would hand to anyone on
    the way."""
    web_tls_name: str | None = None
    """The name the views' certificate carries (``CASETRAIL_CASELOAD_TLS_NAME``; the chart
    sets the caseload Service's), checked on the owning process's certificate when a
    per-worker view is forwarded to its address (``routing``), a pod's IP, which no
    certificate names; ``None``: the address's own host. Read only with ``web_tls``."""
    plaintext_allowed: bool = False
    """Plain HTTP beyond loopback allowed (``ALLOW_PLAINTEXT``): checked against the address
    the web server binds (``--web-bind`` included) as it starts."""
    issuer: IssuerSettings | None = None
    """Who signs the bearer tokens the web views require (``CASETRAIL_OIDC_ISSUER``); without
    one every view but the status refuses (they name cases)."""
    audit_address: str | None = None
    """Audit's gRPC address (``host:port``): every read of a view is recorded there before it
    is answered (``recording``); without it every view but the status refuses."""
    audit_tls: ClientTls | None = None
    """TLS to audit, as every casetrail client (``CASETRAIL_TLS_CA``, mutual with
    ``CASETRAIL_TLS_CLIENT_CERT``/``_KEY``)."""
    audit_plaintext_allowed: bool = False
    """Audit beyond loopback may be dialled without ``audit_tls``
    (``CASETRAIL_GRPC_ALLOW_PLAINTEXT=1``: a mesh's sidecar terminates TLS; the chart sets it
    with ``ALLOW_PLAINTEXT``); otherwise the worker refuses to start
    (``require_tls_to_audit``): every reader's bearer token goes to audit."""
    time_zone: tzinfo = UTC
    """The agency's time zone (``CASETRAIL_AGENCY_TIME_ZONE``): whose date "today" is for
    overdue follow-ups, as for the services' ages."""

    def __post_init__(self) -> None:
        check_topic_name(self.topic)
        check_topic_name(self.app_id)
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")
        if self.processing_guarantee not in PROCESSING_GUARANTEES:
            raise ValueError(
                f"processing_guarantee must be one of {', '.join(PROCESSING_GUARANTEES)},"
                f" got {self.processing_guarantee!r}"
            )
        if self.commit_interval <= 0:
            raise ValueError("commit_interval must be positive")
        if self.web_tls_name is not None and not _HOST_NAME.fullmatch(self.web_tls_name):
            raise ValueError(
                "web_tls_name (CASETRAIL_CASELOAD_TLS_NAME) must be a DNS name its certificate"
                " carries: letters, digits, '-' and '.'"
            )
        if self.session_timeout not in SESSION_TIMEOUT_RANGE:
            raise ValueError(
                "session_timeout (CASETRAIL_CASELOAD_SESSION_TIMEOUT) must be"
                f" {SESSION_TIMEOUT_RANGE.start} to"
                f" {SESSION_TIMEOUT_RANGE.stop - 1} seconds (the broker's and Faust's bounds),"
                f" got {self.session_timeout}"
            )

    @property
    def topics(self) -> TopicSettings:
        return TopicSettings(
            case_events_topic=self.topic,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            min_insync_replicas=self.min_insync_replicas,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CaseloadSettings:
        """``CASETRAIL_KAFKA_BOOTSTRAP``/``CASETRAIL_KAFKA_PORT`` (see ``KafkaSettings``),
        the case-event topic and replication (see ``TopicSettings.from_env``),
        ``CASETRAIL_CASELOAD_APP_ID``, ``CASETRAIL_CASELOAD_DATA_DIR``,
        ``CASETRAIL_CASELOAD_GUARANTEE``, ``CASETRAIL_CASELOAD_SESSION_TIMEOUT`` (seconds),
        ``CASETRAIL_CASELOAD_WEB_PORT`` (0 turns the web
        views off), ``CASETRAIL_CASELOAD_ALLOW_PLAINTEXT`` (see ``ALLOW_PLAINTEXT``; read
        only without a certificate), ``CASETRAIL_OIDC_ISSUER``/``_AUDIENCE`` (see
        ``IssuerSettings``),
        ``CASETRAIL_AUDIT_ADDRESS``, ``CASETRAIL_TLS_CA`` (see ``ClientTls``),
        ``CASETRAIL_GRPC_ALLOW_PLAINTEXT`` (``audit_plaintext_allowed``), the views'
        ``CASETRAIL_TLS_CERT``/``_KEY`` (see ``ServerTls``) and the name they carry,
        ``CASETRAIL_CASELOAD_TLS_NAME`` (``web_tls_name``), and ``CASETRAIL_AGENCY_TIME_ZONE``
        (see ``casetrail_platform.ages``)."""
        env = os.environ if environ is None else environ
        defaults = cls()
        topics = TopicSettings.from_env(env)
        web_port = whole_number(env, "CASETRAIL_CASELOAD_WEB_PORT", defaults.web_port)
        web_tls = ServerTls.from_env(env)
        # With a certificate there is no plain HTTP to allow (the chart leaves it unset then).
        plaintext_allowed = web_tls is None and allow_plaintext(env, ALLOW_PLAINTEXT)
        # Without a certificate nothing is checked against a name (the chart sets none then).
        tls_name = None if web_tls is None else env.get("CASETRAIL_CASELOAD_TLS_NAME", "").strip()
        return cls(
            kafka=KafkaSettings.from_env(env),
            topic=topics.case_events_topic,
            partitions=topics.partitions,
            replication_factor=topics.replication_factor,
            min_insync_replicas=topics.min_insync_replicas,
            app_id=env.get("CASETRAIL_CASELOAD_APP_ID", defaults.app_id),
            data_dir=Path(env.get("CASETRAIL_CASELOAD_DATA_DIR", str(defaults.data_dir))),
            processing_guarantee=env.get(
                "CASETRAIL_CASELOAD_GUARANTEE", defaults.processing_guarantee
            ),
            session_timeout=whole_number(
                env, "CASETRAIL_CASELOAD_SESSION_TIMEOUT", defaults.session_timeout
            ),
            web_enabled=web_port != 0,
            web_port=web_port,
            web_tls=web_tls,
            web_tls_name=tls_name or None,
            plaintext_allowed=plaintext_allowed,
            issuer=IssuerSettings.from_env(env),
            audit_address=env.get("CASETRAIL_AUDIT_ADDRESS", "").strip() or None,
            audit_tls=ClientTls.from_env(env),
            audit_plaintext_allowed=allow_plaintext(env, GRPC_ALLOW_PLAINTEXT),
            time_zone=agency_time_zone(env),
        )
