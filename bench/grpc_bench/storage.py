"""A PostgreSQL database and a Kafka topic of the run's own (distributed), removed afterwards."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import psycopg
from aiokafka.admin import AIOKafkaAdminClient
from psycopg.conninfo import make_conninfo

log = logging.getLogger("bench.grpc")


@contextlib.contextmanager
def fresh_database(base_dsn: str, name: str) -> Iterator[str]:
    """A new database on the server of ``base_dsn``, dropped afterwards."""
    admin = make_conninfo(base_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(base_dsn, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_facts(dsn: str) -> str:
    with psycopg.connect(dsn) as connection:
        version = connection.execute("SHOW server_version").fetchone()
        sync = connection.execute("SHOW synchronous_commit").fetchone()
    return f"{version[0] if version else '?'}, synchronous_commit={sync[0] if sync else '?'}"


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="casetrail-bench")
    await admin.start()
    try:
        await admin.delete_topics([topic])
    except Exception as error:  # cleanup only: a leftover topic is no reason to fail
        log.warning("could not delete topic %s: %s", topic, error)
    finally:
        await admin.close()
