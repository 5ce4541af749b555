"""How to reach Kafka and how the clients behave; read from the environment by bootstraps."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from casetrail_platform.addresses import MAX_PORT, port_problem, unbracketed
from casetrail_platform.bus.kafka_security import KafkaSecurity
from casetrail_platform.bus.retry import Backoff
from casetrail_platform.typed_numbers import ascii_whole_number

DEFAULT_KAFKA_PORT = 19092
DEFAULT_FETCH_MAX_WAIT_MS = 20
BOOTSTRAP_VARIABLE = "CASETRAIL_KAFKA_BOOTSTRAP"
PORT_VARIABLE = "CASETRAIL_KAFKA_PORT"
FETCH_MAX_WAIT_VARIABLE = "CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS"
MAX_FETCH_WAIT_MS = 10_000
"""Well under ``request_timeout_ms`` and ``session_timeout_ms``: a fetch the broker holds
longer would look like a lost connection."""


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    client_id: str = "casetrail"
    request_timeout_ms: int = 30_000
    """How long a send or admin request may wait for the broker before failing."""
    linger_ms: int = 5
    """Small: the relay publishes whole batches anyway, so waiting longer buys little."""
    max_batch_bytes: int = 256 * 1024
    """Largest record batch per partition. The relay hands over 500 events at a time and the
    producer keeps one unsent batch per partition, so batches much smaller than a
    partition's share would make it wait on the broker batch after batch. Must stay under
    the broker's ``message.max.bytes`` (1 MiB by default)."""
    compression_type: str | None = None
    """``"gzip"``, ``"lz4"``, ``"zstd"`` or ``"snappy"`` when the codec library is installed."""
    poll_timeout_ms: int = 500
    """Longest a consumer waits for records before checking whether it should stop."""
    max_batch: int = 100
    """Records fetched per poll, across partitions: one batch for a ``BatchHandler`` (one
    read-model transaction); offsets are committed once per poll."""
    fetch_min_bytes: int = 64 * 1024
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS
    """The broker answers a fetch once ``fetch_min_bytes`` are there or after this long: under
    load one poll (one read-model transaction) covers many events instead of one each, and
    an event waits at most this long while records flow (``CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS``).
    A quiet consumer fetches with ``quiet_fetch_wait_ms`` instead (``bus.fetch_pacing``)."""
    quiet_fetch_wait_ms: int = 500
    """Once a poll came back empty: the broker answers at the first byte or after this long
    (``casetrail_platform.bus.fetch_pacing``)."""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    """A handler (retries included) may hold a batch at most this long before the group
    gives its partitions to another member."""
    reconnect_backoff: Backoff = field(default_factory=lambda: Backoff(0.2, 5.0))
    """Backoff between attempts while the broker is unreachable."""
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """Authentication and TLS (``casetrail_platform/bus/kafka_security.py``); plaintext by
    default."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSettings:
        """``CASETRAIL_KAFKA_BOOTSTRAP`` (host:port[,host:port], as ``bootstrap_problem``
        checks it) wins over ``CASETRAIL_KAFKA_PORT`` (a port on 127.0.0.1); security from the
        ``CASETRAIL_KAFKA_SECURITY_PROTOCOL``/``_SASL_*``/``_SSL_*`` variables. A value the
        clients could not use is a ``ValueError`` naming its variable."""
        env = os.environ if environ is None else environ
        bootstrap = env.get(BOOTSTRAP_VARIABLE, "").strip()
        if bootstrap:
            problem = bootstrap_problem(bootstrap)
            if problem is not None:
                raise ValueError(f"{BOOTSTRAP_VARIABLE}: {problem}")
        else:
            port = env.get(PORT_VARIABLE, str(DEFAULT_KAFKA_PORT)).strip()
            number = ascii_whole_number(port)
            if number is None or not 1 <= number <= MAX_PORT:
                raise ValueError(
                    f"{PORT_VARIABLE} must be a port from 1 to {MAX_PORT}, got {port!r}"
                )
            bootstrap = f"127.0.0.1:{number}"
        return cls(
            bootstrap_servers=bootstrap,
            security=KafkaSecurity.from_env(env),
            fetch_max_wait_ms=_fetch_max_wait_ms(env),
        )


def bootstrap_problem(servers: str) -> str | None:
    """Why ``servers`` (``host:port[,host:port]``, an IPv6 host in brackets; a host alone is
    dialled on port 9092) names no brokers the Kafka client can dial, or ``None``. The
    client (aiokafka's ``collect_hosts``) failed on each of these with a traceback, at start
    or at its first connection: a port that is no number or beyond 65535, brackets left open
    (``[::1:9092``) or with text after them, a host the resolver cannot encode (a label over
    63 characters, ``$'\\xff'``). An IPv6 address unbracketed was read as the host with the
    port it seemed to end with, or as the whole address on Kafka's port (``::1:9092``):
    refused too."""
    for broker in (entry.strip() for entry in servers.split(",")):
        if broker and not any(mark in broker for mark in ":[]"):
            # A host alone: the client dials it on Kafka's port, 9092, as it always did.
            if not _is_host(broker, bracketed=False):
                return f"{broker!r}: the host is no host name or address"
            continue
        written, colon, port = broker.rpartition(":")
        host = unbracketed(written)
        if not colon or not port.isascii() or not port.isdigit() or not host:
            return f"{broker!r} is not host:port"
        if "[" in host or "]" in host or (":" in host and host == written):
            return f"{broker!r} is not host:port (an IPv6 address in brackets: [::1]:9092)"
        if not _is_host(host, bracketed=host != written):
            return f"{broker!r}: the host is no host name or address"
        problem = port_problem(broker)
        if problem is not None:
            return problem
    return None


def _is_host(host: str, *, bracketed: bool) -> bool:
    """An IPv6 address within brackets; else a name the resolver can encode (its IDNA
    codec: what ``socket.getaddrinfo`` would raise ``UnicodeError`` on)."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def _fetch_max_wait_ms(env: Mapping[str, str]) -> int:
    configured = env.get(FETCH_MAX_WAIT_VARIABLE, "").strip()
    if not configured:
        return DEFAULT_FETCH_MAX_WAIT_MS
    milliseconds = ascii_whole_number(configured)
    if milliseconds is None or not 1 <= milliseconds <= MAX_FETCH_WAIT_MS:
        raise ValueError(
            f"{FETCH_MAX_WAIT_VARIABLE} must be milliseconds from 1 to {MAX_FETCH_WAIT_MS},"
            f" got {configured!r}"
        )
    return milliseconds
