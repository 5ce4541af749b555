"""The PostgreSQL password comes from a private file, never from the environment
(casetrail_platform/store/pg_password.py; the chart's CASETRAIL_PG_PASSWORD_FILE)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

import services.migrate
from casetrail_platform.private_files import MAX_PASSWORD_BYTES
from casetrail_platform.store.pg_password import (
    DEFAULT_PG_DSN,
    DSN_VARIABLE,
    PASSWORD_FILE_VARIABLE,
    deployment_dsn,
    with_password_file,
)
from cli import stores
from services.startup import postgres_name

DSN = "postgresql://db.casetrail.svc:5432/casetrail"


def password_file(tmp_path: Path, content: bytes, mode: int = 0o400) -> Path:
    path = tmp_path / "password"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_without_the_variable_the_dsn_is_unchanged() -> None:
    assert with_password_file(DSN, {}) == DSN
    assert with_password_file(DSN, {PASSWORD_FILE_VARIABLE: ""}) == DSN


@pytest.mark.parametrize("mode", [0o400, 0o440, 0o600])
def test_the_files_password_is_added_to_the_dsn(tmp_path: Path, mode: int) -> None:
    """0440: a Kubernetes Secret mounted with the pod's fsGroup (libpq's PGPASSFILE refuses
    it); the final newline `kubectl create secret --from-file` may keep is not the password's."""
    path = password_file(tmp_path, b"s3cr:et 'x'\\\n", mode)
    dsn = with_password_file(DSN, {PASSWORD_FILE_VARIABLE: str(path)})
    parts = conninfo_to_dict(dsn)
    assert parts["password"] == "s3cr:et 'x'\\"
    assert parts["host"] == "db.casetrail.svc"
    assert parts["dbname"] == "casetrail"
    # What the logs say of the database: its address, never the password.
    assert "s3cr" not in postgres_name(dsn)


@pytest.mark.parametrize(
    ("content", "mode", "what"),
    [
        (b"secret", 0o644, "readable by others"),
        (b"secret", 0o604, "readable by others"),
        (b"", 0o400, "one line"),
        (b"\n", 0o400, "one line"),
        (b"two\nlines", 0o400, "one line"),
        (b"x" * (MAX_PASSWORD_BYTES + 1), 0o400, "larger than"),
    ],
)
def test_a_file_that_is_no_private_password_is_refused(
    tmp_path: Path, content: bytes, mode: int, what: str
) -> None:
    path = password_file(tmp_path, content, mode)
    with pytest.raises(ValueError, match=what) as refused:
        with_password_file(DSN, {PASSWORD_FILE_VARIABLE: str(path)})
    assert str(path) in str(refused.value)
    if content.strip():
        assert content.decode()[:6] not in str(refused.value).replace(str(path), "")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No such file"):
        with_password_file(DSN, {PASSWORD_FILE_VARIABLE: str(tmp_path / "absent")})


REPOSITORY = Path(__file__).resolve().parents[2]
ELSEWHERE = "postgresql://elsewhere:5432/other"


@pytest.mark.parametrize(
    ("environ", "given", "expected"),
    [
        ({}, None, DEFAULT_PG_DSN),
        ({DSN_VARIABLE: DSN}, None, DSN),
        ({DSN_VARIABLE: DSN}, ELSEWHERE, ELSEWHERE),
        ({DSN_VARIABLE: DSN}, "", DSN),
        ({}, ELSEWHERE, ELSEWHERE),
    ],
)
def test_the_deployments_dsn_is_the_flag_then_the_variable_then_the_default(
    environ: dict[str, str], given: str | None, expected: str
) -> None:
    assert deployment_dsn(environ, given) == expected


@pytest.mark.parametrize("given", [None, ELSEWHERE])
def test_the_deployments_dsn_takes_the_files_password(tmp_path: Path, given: str | None) -> None:
    path = password_file(tmp_path, b"s3cret\n")
    dsn = deployment_dsn({DSN_VARIABLE: DSN, PASSWORD_FILE_VARIABLE: str(path)}, given)
    assert conninfo_to_dict(dsn) == {**conninfo_to_dict(given or DSN), "password": "s3cret"}


def test_the_command_and_the_migration_job_read_the_dsn_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner, services.migrate and the casetrail command each spelled the variable, its
    default and the password file; now each asks ``deployment_dsn``."""
    path = password_file(tmp_path, b"s3cret")
    monkeypatch.setenv(DSN_VARIABLE, DSN)
    monkeypatch.setenv(PASSWORD_FILE_VARIABLE, str(path))
    expected = deployment_dsn({DSN_VARIABLE: DSN, PASSWORD_FILE_VARIABLE: str(path)})
    command = argparse.Namespace(backend="distributed", pg_dsn=None)
    assert stores.postgres_dsn(command) == expected
    command.pg_dsn = ELSEWHERE
    flagged = stores.postgres_dsn(command)
    assert flagged is not None
    assert conninfo_to_dict(flagged) == {**conninfo_to_dict(ELSEWHERE), "password": "s3cret"}

    migrated: list[str] = []

    async def migrate(dsn: str, names: Sequence[str]) -> None:
        migrated.append(dsn)

    monkeypatch.setattr(services.migrate, "migrate", migrate)
    assert services.migrate.main([]) == 0
    assert migrated == [expected]


def test_only_the_password_module_reads_the_dsn_variable() -> None:
    """One reading of ``CASETRAIL_PG_DSN`` in the product (the runner's included)."""
    readers = [
        path.relative_to(REPOSITORY).as_posix()
        for package in ("casetrail_platform", "services", "cli")
        for path in sorted((REPOSITORY / package).rglob("*.py"))
        if '"CASETRAIL_PG_DSN"' in path.read_text(encoding="utf-8")
    ]
    assert readers == ["casetrail_platform/store/pg_password.py"]


@pytest.mark.parametrize(
    "dsn",
    [
        DSN,
        "postgresql://postgres@[::1]:15570/casetrail",
        "postgresql://h1:5432,h2:5433/casetrail?target_session_attrs=read-write",
        "postgresql://h1,h2/casetrail",  # no port: libpq's default for each
        "host=h1,h2 port=5432 dbname=casetrail sslmode=verify-full gssencmode=disable",
        "host=db port=' 5432 ' channel_binding=require",
        "",  # libpq's own defaults (PGHOST and the rest)
    ],
)
def test_a_dsn_libpq_can_use_is_the_deployments(dsn: str) -> None:
    assert deployment_dsn({DSN_VARIABLE: dsn}) == dsn


BAD_PORT_DSN = "postgresql://kim:SECRET@::1:15570/casetrail"
"""libpq reads no host and the port ':1:15570', and says so only when it connects."""


def test_a_dsn_libpq_would_refuse_ends_the_runner_and_the_migration_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both connected and reported the database unavailable, retrying (the migration Job's
    pod restarted for ever) instead of naming the setting."""
    from services import runner

    monkeypatch.setenv("CASETRAIL_OIDC_ISSUER", "https://issuer.example")
    monkeypatch.setenv("CASETRAIL_OIDC_AUDIENCE", "casetrail")
    monkeypatch.setenv(DSN_VARIABLE, BAD_PORT_DSN)
    monkeypatch.delenv(PASSWORD_FILE_VARIABLE, raising=False)
    options = runner.parse(["--backend", "distributed", "--any-port", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^CASETRAIL_PG_DSN: the port must be a number") as ended:
        asyncio.run(runner.serve(options, tmp_path))
    assert "SECRET" not in str(ended.value)

    async def migrate(dsn: str, names: Sequence[str]) -> None:
        raise AssertionError("migrated with a DSN libpq refuses")

    monkeypatch.setattr(services.migrate, "migrate", migrate)
    assert services.migrate.main([]) == 1
    assert "CASETRAIL_PG_DSN: the port must be a number" in caplog.text
    assert "SECRET" not in caplog.text
