"""Opening a service's own storage from the command line, as the service itself does."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.keys.hosting import (
    KEK_FILE_VARIABLE,
    PREVIOUS_KEK_FILES_VARIABLE,
    configured_kek_files,
    default_kek,
)
from casetrail_platform.keys.port import KeyUnavailableError
from events.catalog_registry import default_registry


def infrastructure(options: argparse.Namespace) -> Infrastructure:
    """The service's storage with the ledger settings it runs with (``CASETRAIL_AGENCY`` names
    its log: without them every check ran against ``casetrail/example-agency/<service>``, and
    failed a healthy store of any other agency), and the services' KEK, never created here
    (``readable_keys`` checks it before sealed values are read)."""
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
        # Kafka is not contacted here: only by the commands that read or publish the ledger's
        # checkpoints there (verify-store, ledger rotate).
        infra = Infrastructure.distributed(data_dir, dsn, kafka)
    # Its registry sealed with the KEK the services use, not one a tool would create where
    # none is found (the registry made again: the first one holds the default's keyring).
    infra = replace(
        infra, registry=default_registry(), key_encryption_key=default_kek(data_dir, create=False)
    )
    try:
        return ledger_settings(infra, os.environ)
    except ValueError as error:  # a usage error (exit 2), as the runner refuses to start
        raise SystemExit(f"ledger settings: {error}") from None


def readable_keys(infra: Infrastructure) -> None:
    """Exit (a usage error) unless the KEK the services use is at hand and unwraps every live
    data key of the deployment, naming the KEK file and where it is configured. A store tool
    that reads sealed values (``rebuild``, ``tail``) asks before it reads or deletes anything:
    without the services' KEK, a rebuild created a KEK of its own, threw the projection away,
    then failed to unwrap the first key ("retry later", exit 1) and left it empty."""
    keyring = infra.keyring
    if keyring is None:
        return  # nothing sealed (bench/ comparisons only)
    current, previous = configured_kek_files(infra.data_dir)
    source = KEK_FILE_VARIABLE if os.environ.get(KEK_FILE_VARIABLE) else "the KEK"
    given = [(current, source), *((path, PREVIOUS_KEK_FILES_VARIABLE) for path in previous)]
    for path, named in given:
        problem = kek_file_problem(path)
        if problem is not None:
            raise SystemExit(
                f"{named} {path}: {problem}: a store tool reads with the services' KEK and"
                f" never creates one; set {KEK_FILE_VARIABLE} to the file they use"
            )
    try:
        keyring.kek.check()
    except KeyUnavailableError as error:  # a file that is no KEK (not 32 bytes): no outage
        raise SystemExit(error.what) from None
    except ValueError as error:  # others may read it: its words name the file and the remedy
        raise SystemExit(str(error)) from None
    except OSError as error:  # a KEK file that cannot be read
        raise SystemExit(f"{error.filename}: {error.strerror}") from None
    # Asked of the key table, not found out by a first unwrap: a rebuild deletes first. (A
    # table that cannot be reached is an outage: one line, exit 1, nothing deleted.)
    wrapped_by = keyring.table.live_keys_by_kek()
    others = sorted(k for k in wrapped_by if keyring.kek.unwrapper(k).key_id != k)
    if others:
        keys = sum(wrapped_by[kek_id] for kek_id in others)
        raise SystemExit(
            f"{source} {current} is not the services' KEK: {keys} live data keys are wrapped by"
            f" {', '.join(others)}; set {KEK_FILE_VARIABLE} (and {PREVIOUS_KEK_FILES_VARIABLE}"
            " during a rotation) as the services have them"
        )


def kek_file_problem(path: Path) -> str | None:
    """Why ``path`` is no KEK file to read (``None``: it is a file)."""
    if not path.exists():
        return "no such KEK file"
    if not path.is_file():
        return "not a KEK file (a directory, or not a regular file)"
    return None


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
