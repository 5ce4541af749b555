"""The PostgreSQL password from a file (``CASETRAIL_PG_PASSWORD_FILE``), never the environment.

A password in an environment variable (libpq's ``PGPASSWORD``) is readable in
``/proc/<pid>/environ``, handed to every child process and shown by ``kubectl describe`` of a
pod that sets it literally. The chart mounts the database Secret's ``password`` as a file
instead. libpq's own ``PGPASSFILE`` cannot read it: it ignores a file its group may read, and
the kubelet makes a Secret mounted with the pod's ``fsGroup`` 0440. So the file is read here
(owner- or group-readable only: ``private_files.read_password``) and
its password added to the DSN the stores connect with.

``deployment_dsn`` is the one reading of a deployment's database, for the runner, the migration
Job and the ``casetrail`` command alike: ``CASETRAIL_PG_DSN`` (else the development servers'
default), checked as libpq would check it (``pg_dsn.checked_dsn``), with that password.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from psycopg.conninfo import make_conninfo

from casetrail_platform.private_files import read_password
from casetrail_platform.store.pg_dsn import checked_dsn

PASSWORD_FILE_VARIABLE = "CASETRAIL_PG_PASSWORD_FILE"
DSN_VARIABLE = "CASETRAIL_PG_DSN"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:15432/casetrail"
"""The database ``make servers-start`` runs with its default ports."""


def with_password_file(dsn: str, environ: Mapping[str, str]) -> str:
    """``dsn`` with the password of ``CASETRAIL_PG_PASSWORD_FILE`` when it is set
    (``private_files.read_password``: ``ValueError`` naming the file, never its content)."""
    name = environ.get(PASSWORD_FILE_VARIABLE, "")
    if not name:
        return dsn
    password = read_password(Path(name), f"the PostgreSQL password ({PASSWORD_FILE_VARIABLE})")
    return make_conninfo(dsn, password=password)


def deployment_dsn(environ: Mapping[str, str], given: str | None = None) -> str:
    """The database the distributed backend connects to: ``given`` (the command's
    ``--pg-dsn``) when not empty, else ``CASETRAIL_PG_DSN``, else ``DEFAULT_PG_DSN``; with the
    password of ``CASETRAIL_PG_PASSWORD_FILE`` (``ValueError`` naming the file). One libpq
    would refuse is ``pg_dsn.UnusableDsn`` (a ``ValueError``), before the password is added:
    the caller names where it came from."""
    dsn = checked_dsn(given or environ.get(DSN_VARIABLE, DEFAULT_PG_DSN))
    return with_password_file(dsn, environ)
