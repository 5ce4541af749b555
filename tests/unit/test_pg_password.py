"""The PostgreSQL password comes from a private file, never from the environment
(casetrail_platform/store/pg_password.py; the chart's CASETRAIL_PG_PASSWORD_FILE)."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from casetrail_platform.private_files import MAX_PASSWORD_BYTES
from casetrail_platform.store.pg_password import PASSWORD_FILE_VARIABLE, with_password_file
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
