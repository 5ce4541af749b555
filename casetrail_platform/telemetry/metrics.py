"""Prometheus metrics of one process, served over HTTP (``serve_metrics``).

One registry per process (``process_metrics()``), not prometheus-client's global one, so a test
can read exactly what this process counted. Counters and histograms are updated where things
happen (the gRPC interceptor, the dead-letter path, the projection handler); gauges that
describe state (outbox lag, checkpoint age) are set from the status objects the process
already keeps (``OutboxRelay.status()``), sampled by the loop that watches the outbox; how far
each projection fed from the service's own store has got is sampled likewise
(``casetrail_platform.projections.progress``), never read per scrape.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from casetrail_platform.outbox import RelayStatus
    from events.envelope import RecordedEvent

# Command latencies on this machine range from ~0.5 ms (a retried command) to seconds (a
# contended stream retried for its whole budget).
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """Every metric casetrail exports, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.rpcs = Counter(
            "casetrail_rpc_requests",
            "gRPC calls answered, by service, method and status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.rpc_seconds = Histogram(
            "casetrail_rpc_duration_seconds",
            "Time to answer a gRPC call, by service and method.",
            ["service", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.outbox_lag = Gauge(
            "casetrail_outbox_lag_events",
            "Events stored but not yet acknowledged by the bus, per relay.",
            ["relay"],
            registry=registry,
        )
        self.outbox_published = Gauge(
            "casetrail_outbox_published_events",
            "Events the relay has published since the process started (re-publications too).",
            ["relay"],
            registry=registry,
        )
        self.outbox_parked = Gauge(
            "casetrail_outbox_parked_events",
            "Records refused by the bus for good, or held behind one of their case, per relay.",
            ["relay"],
            registry=registry,
        )
        self.outbox_failures = Gauge(
            "casetrail_outbox_consecutive_failures",
            "Publishing attempts that failed in a row, per relay.",
            ["relay"],
            registry=registry,
        )
        self.checkpoint_age = Gauge(
            "casetrail_outbox_checkpoint_age_seconds",
            "Seconds since the relay's checkpoint last moved while events waited (0 when none"
            " wait).",
            ["relay"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "casetrail_consumer_lag_messages",
            "Messages on the bus not yet handled by a consumer group, per partition.",
            ["group", "partition"],
            registry=registry,
        )
        # Seconds, not 1/0: an alert can wait out a short retry by threshold, and a member
        # whose rounds fail one after another never shows 0 in between.
        self.consumer_stalled = Gauge(
            "casetrail_consumer_stalled_seconds",
            "Seconds a consumer group's member has been held back by failing processing (its"
            " handler or decoding failing and retried, or a dead letter it cannot store, nothing"
            " committed), 0 when none is.",
            ["group"],
            registry=registry,
        )
        # Labelled by service too: in the embedded process intake and planning both feed
        # policy.case-facts-v2 from the bus, and one series would mix their delays.
        self.projection_lag = Histogram(
            "casetrail_projection_lag_seconds",
            "From an event's recorded-at time to its application to a read model, by the"
            " service feeding it and projection.",
            ["service", "projection"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        # Own-store projections: labelled by service too, since the embedded process runs the
        # four services on one registry and a projection's name is only unique within one.
        self.own_projection_lag = Gauge(
            "casetrail_projection_lag_events",
            "Events of the service's own store a projection it feeds from that store has not"
            " applied yet (its store's newest position minus the projection's).",
            ["service", "projection"],
            registry=registry,
        )
        self.own_projection_position = Gauge(
            "casetrail_projection_position",
            "Position in the service's own store up to which a projection fed from it has"
            " applied its events (0 after a rebuild's reset).",
            ["service", "projection"],
            registry=registry,
        )
        self.own_projection_age = Gauge(
            "casetrail_projection_position_age_seconds",
            "Seconds since an own-store projection's position last moved while events waited"
            " (0 when none wait).",
            ["service", "projection"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "casetrail_dead_letters",
            "Messages a consumer group set aside on its dead-letter topic, by reason.",
            ["group", "reason"],
            registry=registry,
        )
        # By operation only: a key id or owner names a client.
        self.key_port_failures = Counter(
            "casetrail_key_port_failures",
            "Calls to the key-encryption key (the KMS, or the KEK file) that failed, by"
            " operation: wrap (a new data key) or unwrap (a stored one).",
            ["operation"],
            registry=registry,
        )
        # The witness's health entry as a metric, for alert rules: a gRPC health check is not
        # something Prometheus scrapes.
        self.ledger_witness_consistent = Gauge(
            "casetrail_ledger_witness_consistent",
            "Audit's ledger witness: 1 when its last round found every service's log checked and"
            " consistent, 0 while it holds an inconsistency alarm, lacks a log's public key or"
            " cannot read the logs (health casetrail.audit.ledger-witness NOT_SERVING).",
            registry=registry,
        )
        self._checkpoints: dict[str, _PositionWatch] = {}
        self._stalls: dict[str, dict[object, float]] = {}
        """Per group, when each of its members in this process began to fail (monotonic)."""
        self._own_projections: dict[tuple[str, str], _PositionWatch] = {}

    def observe_relay(self, status: RelayStatus) -> None:
        """Set the outbox gauges from a relay's status (sampled, e.g. every 2 s)."""
        relay = status.name
        self.outbox_lag.labels(relay).set(status.lag)
        self.outbox_published.labels(relay).set(status.published_total)
        self.outbox_parked.labels(relay).set(status.parked)
        self.outbox_failures.labels(relay).set(status.consecutive_failures)
        watch = self._checkpoints.setdefault(relay, _PositionWatch())
        self.checkpoint_age.labels(relay).set(watch.age(status.published_position, status.lag))

    def consumer_stalled_since(self, group: str, member: object, since: float | None) -> None:
        """Say that ``member`` of ``group`` has been failing since ``since`` (monotonic
        seconds), or (``None``) that it is not. The gauge is read at each scrape, so it grows
        while a member waits between its retries."""
        stalls = self._stalls.get(group)
        if stalls is None:
            stalls = self._stalls[group] = {}
            self.consumer_stalled.labels(group).set_function(
                lambda: time.monotonic() - min(stalls.values()) if stalls else 0.0
            )
        if since is None:
            stalls.pop(member, None)
        else:
            stalls.setdefault(member, since)

    def observe_own_projection(
        self, service: str, projection: str, position: int, head: int
    ) -> None:
        """Set how far ``projection``, fed from ``service``'s own store, has got: its
        ``position`` and the store's ``head`` (its newest position), read after it."""
        lag = max(0, head - position)
        self.own_projection_lag.labels(service, projection).set(lag)
        self.own_projection_position.labels(service, projection).set(position)
        watch = self._own_projections.setdefault((service, projection), _PositionWatch())
        self.own_projection_age.labels(service, projection).set(watch.age(position, lag))


@dataclass
class _PositionWatch:
    """When a position (a relay's checkpoint, a projection's) last moved, to tell a stuck one
    from an idle one."""

    position: int = -1
    moved_at: float = 0.0

    def age(self, position: int, lag: int) -> float:
        now = time.monotonic()
        if position != self.position or lag == 0:
            self.position = position
            self.moved_at = now
        return now - self.moved_at


@functools.cache
def process_metrics() -> Metrics:
    """This process's metrics (made on first use)."""
    return Metrics()


def serve_metrics(address: str) -> tuple[str, int, object]:
    """Serve ``/metrics`` of this process on ``address`` (``host:port``; port 0: any free
    port) in a daemon thread. Returns host, bound port and the server (``shutdown()`` it)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    server, _thread = start_http_server(int(port), host, registry=process_metrics().registry)
    return host, server.server_port, server


@contextlib.contextmanager
def counting_key_port_failures(operation: str) -> Iterator[None]:
    """Count a failure of the key-encryption key's ``operation`` (``wrap``, ``unwrap``) done
    within; the error goes on as it was."""
    try:
        yield
    except Exception:
        process_metrics().key_port_failures.labels(operation).inc()
        raise


def observe_consumer_lag(
    group: str, ends: Mapping[int, int | None], committed: Mapping[int, int]
) -> None:
    """Set a consumer group's lag on the ``committed`` partitions: the end of the partition
    (Kafka: its high watermark) minus the offset committed. A partition whose end is not
    known (``None``) keeps its value."""
    lag = process_metrics().consumer_lag
    for partition, offset in committed.items():
        end = ends.get(partition)
        if end is not None:
            lag.labels(group, str(partition)).set(max(0, end - offset))


def forget_consumer_lag(group: str, partitions: Iterable[int]) -> None:
    """Drop the lag of partitions this process no longer consumes (revoked by a rebalance):
    the member now reading them reports their lag, and a value left here would stay frozen."""
    lag = process_metrics().consumer_lag
    for partition in partitions:
        lag.remove(group, str(partition))


def observe_projection(service: str, projection: str, records: Sequence[RecordedEvent]) -> None:
    """Record how long after being stored each of ``records`` reached ``service``'s
    ``projection``."""
    if not records:
        return
    lag = process_metrics().projection_lag.labels(service, projection)
    now = time.time()
    for record in records:
        lag.observe(max(0.0, now - record.recorded_at.timestamp()))
