"""Opening a service's own storage from the command line, as the service itself does."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from casetrail_platform.infrastructure import Infrastructure


def infrastructure(options: argparse.Namespace) -> Infrastructure:
    """The service's storage with the ledger settings it runs with (``CASETRAIL_AGENCY`` names
    its log: without them every check ran against ``casetrail/example-agency/<service>``, and
    failed a healthy store of any other agency)."""
    from casetrail_platform.ledger.hosting import ledger_settings

    data_dir = Path(options.data_dir).resolve()
    dsn = postgres_dsn(options)
    if dsn is None:
        infra = Infrastructure(data_dir=data_dir)
    else:
        from casetrail_platform.bus.kafka_settings import KafkaSettings

        try:
            kafka = KafkaSettings.from_env()  # ValueError naming the variable
        except ValueError as error:  # a usage error (exit 2), as the runner refuses to start
            raise SystemExit(f"Kafka settings: {error}") from None
        # Kafka is not contacted: only the service's PostgreSQL schemas are opened.
        infra = Infrastructure.distributed(data_dir, dsn, kafka)
    try:
        return ledger_settings(infra, os.environ)
    except ValueError as error:  # a usage error (exit 2), as the runner refuses to start
        raise SystemExit(f"ledger settings: {error}") from None


def postgres_dsn(options: argparse.Namespace) -> str | None:
    """The distributed backend's database (``None``: the embedded backend)."""
    if options.backend == "embedded":
        return None
    from casetrail_platform.store.pg_dsn import UnusableDsn
    from casetrail_platform.store.pg_password import DSN_VARIABLE, deployment_dsn

    try:
        dsn = deployment_dsn(os.environ, options.pg_dsn)
    except UnusableDsn as error:  # a usage error (exit 2), named by its source, never printed
        raise SystemExit(f"{'--pg-dsn' if options.pg_dsn else DSN_VARIABLE}: {error}") from None
    except ValueError as error:  # the password file (it names the file, never its content)
        raise SystemExit(f"PostgreSQL password: {error}") from None
    return dsn


def has_local_store(infra: Infrastructure, service: str) -> bool:
    """Whether the service has ever stored anything: opening its store would create it
    (embedded: the file; distributed: its schema, and a ledger opened over a missing schema
    fails with a traceback)."""
    if infra.postgres_dsn is None:
        return (infra.data_dir / service / "events.db").exists()
    import psycopg

    from casetrail_platform.errors import StorageUnavailableError

    try:
        with psycopg.connect(infra.postgres_dsn, connect_timeout=10) as connection:
            row = connection.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f'"{service}_events".stored_events',)
            ).fetchone()
    except psycopg.OperationalError as error:
        # Named as the store would name it (one line, exit 1), never the driver's text.
        raise StorageUnavailableError(f"{service}_events event store") from error
    return bool(row and row[0])


def where_stored(infra: Infrastructure, service: str) -> str:
    """Where ``has_local_store`` looked, for a message saying there is nothing."""
    if infra.postgres_dsn is None:
        return str(infra.data_dir)
    return f"PostgreSQL (no table {service}_events.stored_events)"
