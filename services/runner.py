"""Start casetrail services.

Embedded default (``make run``): all four services in this process, SQLite files under the data
directory and the in-process bus between them, a local development issuer of bearer tokens
(unless ``CASETRAIL_OIDC_ISSUER`` names a real one) and the audit console (services/console/).
Distributed (``make run-distributed``): one service per process on PostgreSQL and Kafka,
settings (the token issuer too) from the environment. TLS from ``--tls-cert``/``--tls-key``
(mutual with ``--tls-client-ca``) or the ``CASETRAIL_TLS_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casetrail_platform.addresses import (
    MAX_PORT,
    addresses_file,
    bracketed,
    host_port,
    port_problem,
    unbracketed,
)
from casetrail_platform.ages import agency_time_zone
from casetrail_platform.bus.inprocess import InProcessBus
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings, ensure_topics
from casetrail_platform.grpc_platform.capacity import Capacity
from casetrail_platform.grpc_platform.server import (
    BindError,
    PlaintextRefused,
    allow_plaintext,
    require_tls_beyond_loopback,
)
from casetrail_platform.hosting import RunningService
from casetrail_platform.identity.development import DEFAULT_PORT as DEV_ISSUER_PORT
from casetrail_platform.identity.development import DevelopmentIssuer
from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.identity.tls import ClientTls, ServerTls
from casetrail_platform.identity.verifier import TokenVerifier
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.hosting import ledger_settings
from casetrail_platform.policy.home_agency import home_agency
from casetrail_platform.private_files import (
    owner_only_umask,
    private_directory,
    private_replacement,
)
from casetrail_platform.shutdown import (
    CLOSE_SECONDS,
    EXIT_SECONDS,
    StopDeadline,
    exit_now,
    left_behind,
    within,
)
from casetrail_platform.store.pg_dsn import UnusableDsn
from casetrail_platform.store.pg_password import DSN_VARIABLE, deployment_dsn
from casetrail_platform.telemetry.logs import configure_logging
from casetrail_platform.telemetry.metrics import serve_metrics
from casetrail_platform.telemetry.tracing import configure_tracing, flush_tracing
from cli.main import bounded
from events.topics import DEFAULT_CASE_EVENTS_TOPIC
from services.startup import postgres_name, start_when_reachable, unreachable

if TYPE_CHECKING:
    from services.console.server import RunningConsole

SERVICES = ("intake", "coordination", "planning", "audit")
# Below Linux's ephemeral range (32768-60999), so outgoing connections never hold them.
DEFAULT_PORTS = {"intake": 7301, "coordination": 7302, "planning": 7303, "audit": 7304}

log = logging.getLogger("casetrail.runner")


async def start_services(
    infra: Infrastructure, names: Sequence[str], host: str, ports: dict[str, int]
) -> list[RunningService]:
    """Start ``names`` one after another, each serving before the next starts; on one
    in-process bus, its barriers held until all have started (``barriers_held``)."""
    running: list[RunningService] = []
    try:
        with barriers_held(infra.inprocess_bus):
            for name in names:
                bootstrap = importlib.import_module(f"services.{name}.bootstrap")
                running.append(await bootstrap.start(infra, host_port(host, ports[name])))
    except BaseException:
        await stop_services(running)
        raise
    return running


@contextmanager
def barriers_held(bus: InProcessBus | None) -> Iterator[None]:
    """While the services of one in-process bus (embedded) start, its barriers wait as for a
    relay's refill of their own (``InProcessBus.republishing``), ended once every service has
    started, or failed to. A service's relay, which refills the bus from its store, is made
    only as the service starts, so the first to serve decided on a bus that did not yet hold
    the others' stores: intake took a transfer recorded before the stop, not yet republished
    by coordination's relay, for never made, and the old team's supervisor reopened the case."""
    starting = None if bus is None else bus.republishing()
    try:
        yield
    finally:
        if starting is not None:
            starting.ended()


async def stop_services(running: Sequence[RunningService]) -> None:
    # Together: each one's grace and bounds run side by side, so a process of four stops
    # within one service's time (casetrail_platform/shutdown.py STOP_DEADLINE_SECONDS).
    await asyncio.gather(*(service.stop() for service in reversed(running)))


def write_addresses(data_dir: Path, addresses: dict[str, str]) -> None:
    """Write the services' addresses for the CLI (cli/rpc.py ``load_addresses``): whole or not
    at all (a CLI reading while it is written sees the old file or the new one), and onto the
    file itself: a symbolic link planted at its name is replaced, never written through."""
    with private_replacement(addresses_file(data_dir)) as file:
        file.write((json.dumps(addresses, indent=2) + "\n").encode())


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    try:
        configure_logging()
        configure_tracing("casetrail-" + "-".join(options.service or ["all"]))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    data_dir = Path(options.data_dir).resolve()
    # Case data and keys: whatever this process creates is owner-only (private_files).
    owner_only_umask()
    try:
        private_directory(data_dir)
    except OSError as error:
        raise SystemExit(f"--data-dir {data_dir}: cannot create it ({error.strerror})") from None
    try:
        asyncio.run(serve(options, data_dir))
    except BindError as error:
        raise SystemExit(f"{error} (--host, or a port taken: --any-port)") from None


async def serve(options: argparse.Namespace, data_dir: Path) -> None:
    names = options.service or list(SERVICES)
    ports = {name: (0 if options.any_port else DEFAULT_PORTS[name]) for name in SERVICES}
    tls = server_tls(options)
    try:
        plaintext_allowed = allow_plaintext(os.environ)
        # Before anything is opened or connected: the servers would refuse it only at bind.
        require_tls_beyond_loopback(options.host, tls, plaintext_allowed=plaintext_allowed)
    except ValueError as error:
        raise SystemExit(f"--host: {error}") from None
    if options.backend == "embedded" and "audit" in names:
        console_tls(tls)  # the console beside audit could not dial it: refused before it starts
    try:
        issuer = IssuerSettings.from_env()
    except ValueError as error:
        raise SystemExit(f"token issuer: {error}") from None
    development_issuer: DevelopmentIssuer | None = None
    if options.backend == "distributed":
        if issuer is None:
            raise SystemExit(
                "the distributed backend needs CASETRAIL_OIDC_ISSUER and CASETRAIL_OIDC_AUDIENCE"
                " (it never starts a development issuer)"
            )
        try:
            kafka = KafkaSettings.from_env()
        except ValueError as error:  # each names its variable (a SASL password file among them)
            raise SystemExit(f"Kafka: {error}") from None
        try:
            topics = TopicSettings.from_env(os.environ, options.topic)
        except ValueError as error:
            raise SystemExit(f"Kafka topics: {error}") from None
        try:
            postgres_dsn = deployment_dsn(os.environ)
        except UnusableDsn as error:  # never the DSN's text: it may hold a password
            raise SystemExit(f"{DSN_VARIABLE}: {error}") from None
        except ValueError as error:
            raise SystemExit(f"PostgreSQL password: {error}") from None
        infra = Infrastructure.distributed(
            data_dir,
            postgres_dsn,
            kafka,
            topics,
            verifier=issuer.verifier(),
            tls=tls,
        )
        infra = replace(infra, plaintext_allowed=plaintext_allowed)
    elif options.topic != DEFAULT_CASE_EVENTS_TOPIC:
        raise SystemExit("--topic needs --backend distributed (the embedded bus has no topics)")
    else:
        verifier: TokenVerifier
        if issuer is None:
            try:
                development_issuer = DevelopmentIssuer(
                    data_dir, port=0 if options.any_port else DEV_ISSUER_PORT
                )
            except ValueError as error:  # its key readable by others
                raise SystemExit(f"development issuer: {error}") from None
            verifier = TokenVerifier.for_issuer(
                development_issuer.url, development_issuer.signer.audience
            )
        else:
            verifier = issuer.verifier()
        infra = replace(
            Infrastructure.embedded(data_dir, verifier=verifier, tls=tls),
            plaintext_allowed=plaintext_allowed,
        )
    try:
        await _serve(options, data_dir, infra, names, ports, development_issuer)
    finally:
        if development_issuer is not None:
            development_issuer.stop()


async def _serve(
    options: argparse.Namespace,
    data_dir: Path,
    infra: Infrastructure,
    names: Sequence[str],
    ports: dict[str, int],
    development_issuer: DevelopmentIssuer | None,
) -> None:
    try:
        infra = replace(
            ledger_settings(infra, os.environ),
            time_zone=agency_time_zone(os.environ),
            home_agency=home_agency(os.environ),
            capacity=Capacity.from_env(os.environ),
        )
    except ValueError as error:  # each names its variable: one line, not a traceback
        raise SystemExit(str(error)) from None
    if options.health_port:
        if len(names) != 1:
            raise SystemExit("--health-port needs exactly one --service (one health port each)")
        infra = replace(infra, health_address=host_port(options.host, options.health_port))
    stop = asyncio.Event()
    # The first signal stops gracefully within STOP_DEADLINE_SECONDS, a second ends at once.
    deadline = StopDeadline(stop.set)
    deadline.install(asyncio.get_running_loop())
    if infra.kafka is not None:
        started = await start_distributed(options, infra, names, ports, stop)
        if started is None:
            print("stopped before serving", flush=True)
            _end_if_cut_short()
            # The stop is done: its watchdog would otherwise still end the process (exit 1)
            # at the deadline, whoever runs in it by then.
            deadline.cancel()
            return
        running = started
    else:
        running = await start_services(infra, names, options.host, ports)
    tune_gc()
    # The addresses a client on this machine dials (the CLI reads them from addresses.json):
    # a wildcard host is no address to dial, and a plain-text client refuses one beyond
    # loopback (identity/tls.py), so 0.0.0.0 there made every command need ALLOW_PLAINTEXT.
    host = dialled_host(options.host)
    addresses = {service.name: host_port(host, service.port) for service in running}
    if options.backend == "embedded":
        await asyncio.to_thread(write_addresses, data_dir, addresses)
    console = None
    if options.backend == "embedded" and "audit" in addresses and infra.verifier is not None:
        audit_port = next(service.port for service in running if service.name == "audit")
        console = await _start_console(
            options,
            infra.verifier,
            host_port(host, audit_port),
            development_issuer,
            https=infra.tls,
        )
    print(f"casetrail ({options.backend}) is serving; data in {data_dir}", flush=True)
    if options.host in WILDCARD_HOSTS:
        print(f"  listening on every address of this machine (--host {options.host!r})", flush=True)
    for name, address in addresses.items():
        print(f"  {name:<13} {address}", flush=True)
    if console is not None:
        print(f"  {'console':<13} {console.url}", flush=True)
    metrics_server = start_metrics(options, names, ports)
    if development_issuer is not None:
        print(
            f"  development token issuer (DEVELOPMENT ONLY) {development_issuer.url}\n"
            "  get a token: casetrail login --user USER --role ROLE",
            flush=True,
        )
    await stop.wait()
    print("stopping...", flush=True)
    await asyncio.gather(
        stop_console(console), stop_services(running), stop_metrics(metrics_server)
    )
    if not flush_tracing(EXIT_SECONDS):
        log.warning("stopping: spans not exported after %.0f s; dropped", EXIT_SECONDS)
    _end_if_cut_short()
    deadline.cancel()


def _end_if_cut_short() -> None:
    """End the process (exit 1) when the stop left steps behind (``within``): asyncio.run
    would wait for them (a frozen server's connection, a start-up attempt's connect), which
    the stop gave up on; the logs are flushed first."""
    if left_behind():
        print("stopped, some steps cut short", flush=True)
        exit_now(1)


async def start_distributed(
    options: argparse.Namespace,
    infra: Infrastructure,
    names: Sequence[str],
    ports: dict[str, int],
    stop: asyncio.Event,
) -> list[RunningService] | None:
    """Create the topics and start the services, retrying while PostgreSQL or Kafka is out of
    reach (services/startup.py); ``None`` when stopped before that."""
    assert infra.kafka is not None
    assert infra.postgres_dsn is not None
    assert infra.topics is not None
    kafka = infra.kafka
    topics = infra.topics
    postgres = postgres_name(infra.postgres_dsn)
    kafka_name = f"Kafka at {kafka.bootstrap_servers}"

    async def attempt() -> list[RunningService]:
        # The partitions and replication the deployment configured (TopicSettings.from_env):
        # whoever gets there first, this process or the Topic Operator, creates the same topics.
        await ensure_topics(kafka, topics)
        return await start_services(infra, names, options.host, ports)

    return await start_when_reachable(
        attempt,
        lambda error: unreachable(error, postgres, kafka_name),
        stop,
        what=", ".join(names),
        health_address=infra.health_address,
    )


def start_metrics(options: argparse.Namespace, names: Sequence[str], ports: dict[str, int]) -> Any:
    """Serve this process's Prometheus metrics and print where (``None``: turned off).
    Default: the first gRPC port of the process + 100 (intake 7301: 7401), so the processes
    of ``make run-distributed`` do not collide; any free port with ``--any-port``."""
    address = options.metrics_address
    if address == "off":
        return None
    if not address:
        port = 0 if options.any_port else min(ports[name] for name in names) + 100
        address = host_port(options.host, port)
    problem = port_problem(address, lowest=0)
    if problem is not None:
        raise SystemExit(f"--metrics-address {problem}")
    try:
        host, port, server = serve_metrics(address)
    except (OSError, ValueError) as error:
        raise SystemExit(f"metrics on {address}: {error}") from None
    print(f"  {'metrics':<13} http://{host_port(host, port)}/metrics", flush=True)
    return server


async def stop_metrics(server: Any) -> None:
    """Stop the metrics server (``start_metrics``; ``None``: none), beside the services' stop.
    Off the event loop: its ``shutdown()`` blocks until the serving thread's next poll (up to
    0.5 s), which on the loop would hold every other step of the stop. Bounded as a close."""
    if server is not None:
        await within("metrics server", asyncio.to_thread(server.shutdown), CLOSE_SECONDS)


async def stop_console(console: RunningConsole | None) -> None:
    """Stop the console (``None``: none), beside the services' stop: its answers under way get
    the same grace as the gRPC servers' calls (``start_console``), not one more before theirs."""
    if console is not None:
        await console.stop()


async def _start_console(
    options: argparse.Namespace,
    verifier: TokenVerifier,
    audit_address: str,
    development_issuer: DevelopmentIssuer | None,
    https: ServerTls | None = None,
) -> RunningConsole:
    """The audit console beside the services, signing in with the same identity, over HTTPS
    with the services' certificate (``https``).

    With the development issuer it stays on 127.0.0.1 whatever ``--host`` says: its sign-in
    mints a token for any name typed in (``development_sign_in_refusal``), while the gRPC
    services may still be served on the network (every call there needs a signed token). So
    it does without ``https`` unless ``CASETRAIL_CONSOLE_ALLOW_PLAINTEXT=1``: the gRPC servers
    may be allowed plain text on the network (a mesh's sidecar), the console's sign-in and
    session cookie are not by that (``require_https_beyond_loopback``).
    """
    from services.console.server import start_console
    from services.console.settings import (
        ALLOW_PLAINTEXT,
        DEFAULT_PORT,
        ConsoleSettings,
        development_sign_in_refusal,
        idle_seconds_from_env,
        require_https_beyond_loopback,
    )

    tls = console_tls(https)
    try:
        idle_seconds = idle_seconds_from_env(os.environ)
        plaintext_allowed = allow_plaintext(os.environ, ALLOW_PLAINTEXT)
        settings = ConsoleSettings(
            audit_address=audit_address,
            verifier=verifier,
            development_signer=None if development_issuer is None else development_issuer.signer,
            tls=tls,
            # As the gRPC servers': the console dials audit where they listen.
            audit_plaintext_allowed=allow_plaintext(os.environ),
            https=https,
            plaintext_allowed=plaintext_allowed,
            idle_seconds=idle_seconds,
        )
    except ValueError as error:  # PlaintextRefused among them: audit beyond loopback
        raise SystemExit(f"console: {error}") from None
    host = options.host
    refusal = development_sign_in_refusal(host) if development_issuer is not None else None
    if refusal is None:
        try:
            require_https_beyond_loopback(host, https, plaintext_allowed=plaintext_allowed)
        except PlaintextRefused as plaintext:
            refusal = str(plaintext)
    if refusal is not None:
        host = "127.0.0.1"
        print(f"  console kept on {host}: {refusal}", flush=True)
    port = 0 if options.any_port else DEFAULT_PORT
    return await start_console(settings, host, port)


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
"""Hosts that listen on every address of this machine: no address to dial (nor a name a
certificate could hold)."""


def dialled_host(host: str) -> str:
    """The host a client on this machine dials for servers listening on ``host``: loopback
    for a wildcard (``WILDCARD_HOSTS``: IPv6's for ``::``, which an IPv6-only socket serves
    without 127.0.0.1), an IPv6 address in brackets (``[::1]:7304``)."""
    if host in WILDCARD_HOSTS:
        return "[::1]" if ":" in host else "127.0.0.1"
    return bracketed(host)


def console_tls(https: ServerTls | None) -> ClientTls | None:
    """How the console beside the services dials audit: ``CASETRAIL_TLS_CA`` (and
    ``CASETRAIL_TLS_CLIENT_CERT``/``_KEY``), the one client setting it takes. Exits naming it
    when the services serve TLS (``https``, their certificate) and it is unset: the console
    would dial audit in plain text against a TLS server, and every page would fail."""
    try:
        tls = ClientTls.from_env()
    except ValueError as error:
        raise SystemExit(f"TLS: {error}") from None
    if https is not None and tls is None:
        raise SystemExit(
            "console: the services serve TLS (--tls-cert/--tls-key, CASETRAIL_TLS_CERT/_KEY)"
            " but CASETRAIL_TLS_CA is not set: the console beside them dials audit with it; set"
            " CASETRAIL_TLS_CA to the CA bundle that signed their certificate"
        )
    return tls


def server_tls(options: argparse.Namespace) -> ServerTls | None:
    """TLS from the flags, else from the ``CASETRAIL_TLS_*`` variables."""
    flags = {
        "CASETRAIL_TLS_CERT": options.tls_cert,
        "CASETRAIL_TLS_KEY": options.tls_key,
        "CASETRAIL_TLS_CLIENT_CA": options.tls_client_ca,
    }
    given = {name: value for name, value in flags.items() if value}
    try:
        return ServerTls.from_env(given if given else os.environ)
    except (ValueError, OSError) as error:
        raise SystemExit(f"TLS: {error}") from None


def tune_gc() -> None:
    """Garbage-collector settings for a serving process, once start-up is done."""
    # Long-lived objects made at start-up need no more scans, and event-heavy work allocates
    # many short-lived objects: fewer young-generation collections (bench/RESULTS.md).
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return options_parser().parse_args(argv)


def options_parser() -> argparse.ArgumentParser:
    """The runner's options, also `casetrail serve`'s (cli/serve.py hands them here)."""
    parser = argparse.ArgumentParser(prog="casetrail serve", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("CASETRAIL_DATA_DIR", "var/data"))
    parser.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--service", action="append", choices=SERVICES, help="repeatable")
    parser.add_argument(
        "--host", type=unbracketed, default="127.0.0.1", help="an IPv6 address with or without []"
    )
    parser.add_argument("--any-port", action="store_true", help="let the OS pick free ports")
    parser.add_argument(
        "--topic",
        default=os.environ.get("CASETRAIL_CASE_EVENTS_TOPIC", DEFAULT_CASE_EVENTS_TOPIC),
        help="the case-event topic (distributed backend)",
    )
    parser.add_argument(
        "--metrics-address",
        default=os.environ.get("CASETRAIL_METRICS_ADDRESS", ""),
        help="host:port for Prometheus metrics, or off (default: first gRPC port + 100)",
    )
    parser.add_argument(
        "--health-port",
        # The variable as text: argparse checks it as it checks the option, naming the option
        # (int() of a bad value failed building the parser, a traceback; 70000 wrapped).
        type=bounded(1, MAX_PORT),
        default=os.environ.get("CASETRAIL_HEALTH_PORT") or None,
        help="also answer grpc.health.v1 alone, in plaintext, on this port, 1 to 65535"
        " (default $CASETRAIL_HEALTH_PORT; Kubernetes' gRPC probes, when the gRPC port speaks"
        " TLS; one --service only)",
    )
    parser.add_argument("--tls-cert", help="server certificate chain, PEM (default: env)")
    parser.add_argument("--tls-key", help="server private key, PEM")
    parser.add_argument("--tls-client-ca", help="client CA, PEM: require mutual TLS")
    return parser


if __name__ == "__main__":
    main()
