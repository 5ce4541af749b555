"""`casetrail` given plausible bad input: one clear line and a non-zero exit, never a traceback;
and the files it writes (a saved token, an export) owner-only and whole or not at all."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from casetrail_platform.identity.development import DevelopmentIssuer, identity_dir
from casetrail_platform.identity.verifier import DEFAULT_MAX_LIFETIME_SECONDS
from casetrail_platform.private_files import private_replacement
from casetrail_platform.store.port import ANY_VERSION
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.login import TOKEN_FILE, bearer_token, trusted_verifier
from cli.main import MAX_LOGIN_HOURS, bounded, main
from cli.tail import tailed_services, tails_own
from events.catalog.access import AccessPurpose, RecordAccessed, RecordSection
from events.catalog.base import Role
from events.catalog_registry import default_registry
from events.envelope import Actor, EventMetadata, NewEvent
from tests.support.tailing import tailed_briefly


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    return exit_.value.code, capsys.readouterr().err + str(exit_.value.code)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory where `make run` has started the development issuer (stopped since)."""
    DevelopmentIssuer(tmp_path, port=0).stop()
    return tmp_path


# --- tokens --------------------------------------------------------------------------------------


def test_a_token_with_a_trailing_newline_is_used_without_it(tmp_path: Path) -> None:
    options = argparse.Namespace(token="header.payload.signature\n", data_dir=str(tmp_path))
    assert bearer_token(options) == "header.payload.signature"


def test_a_saved_token_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    (identity_dir(tmp_path) / TOKEN_FILE).mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_:
        bearer_token(argparse.Namespace(token=None, data_dir=str(tmp_path)))
    assert "cannot read the saved token" in str(exit_.value.code)


@pytest.mark.parametrize("token", ["t\u00f6ken.SECRET", "tok\x01en.SECRET", "tok en.SECRET"])
def test_a_token_grpc_cannot_send_is_named_without_its_value(
    token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """gRPC refused such a token inside the call, with a traceback of its own (exit 1)."""
    argv = ("timeline", "case-1", "--audit", "127.0.0.1:1", "--data-dir", str(tmp_path))
    code, said = _run(capsys, *argv, "--token", token)
    assert code == 2  # a usage error, as argparse's
    assert "--token: not a bearer token (printable ASCII, no spaces)" in said
    assert "SECRET" not in said
    assert "Traceback" not in said
    (identity_dir(tmp_path) / TOKEN_FILE).parent.mkdir(parents=True)
    (identity_dir(tmp_path) / TOKEN_FILE).write_text(token + "\n")
    (identity_dir(tmp_path) / TOKEN_FILE).chmod(0o600)  # as casetrail login writes it
    code, said = _run(capsys, *argv)
    assert code == 2
    assert f"{TOKEN_FILE}: not a bearer token (printable ASCII, no spaces)" in said
    assert "SECRET" not in said
    code, said = _run(capsys, *argv, "--token", "x" * 9000)
    assert code == 2
    assert "--token: not a bearer token (longer than 8192 bytes)" in said


def test_an_issuer_without_an_audience_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASETRAIL_OIDC_ISSUER", "https://issuer.example")
    monkeypatch.delenv("CASETRAIL_OIDC_AUDIENCE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        trusted_verifier(tmp_path, distributed=False)  # what `casetrail tail` checks with
    assert "CASETRAIL_OIDC_AUDIENCE" in str(exit_.value.code)
    code, err = _run(capsys, "console", "--port", "0", "--data-dir", str(tmp_path))
    assert code == 2
    assert "CASETRAIL_OIDC_AUDIENCE" in err


# --- numbers and files given on the command line -------------------------------------------------


def test_a_bounded_number_takes_as_many_digits_as_its_highest() -> None:
    """An int64 tree size is 19 digits; the settings' rule stops at 18 (``typed_numbers``)."""
    size = bounded(0, 2**63 - 1)
    assert size(str(2**63 - 1)) == 2**63 - 1
    for text in (str(2**63), "1" * 20, "\u0661"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number from 0"):
            size(text)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["ledger", "prove", "e1", "--tree-size", "99999999999999999999999"], "--tree-size"),
        (["ledger", "consistency", "intake", "1", "-5"], "second_size"),
        (["break-glass", "open", "c1", "--reason", "x", "--minutes", "1e300"], "--minutes"),
        (["break-glass", "open", "c1", "--reason", "x", "--minutes", "nan"], "--minutes"),
        (["login", "--user", "kim", "--role", "auditor", "--hours", "-5"], "--hours"),
        (["login", "--user", "kim", "--role", "auditor", "--hours", "nan"], "--hours"),
        (["login", "--user", "kim", "--role", "auditor", "--hours", "1e300"], "--hours"),
        (["token", "--user", "kim", "--role", "auditor", "--hours", "0"], "--hours"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(capsys, *argv)
    assert code == 2
    assert option in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["state", "c1", "--as-of", "0001-01-01T00:00+01:00"], "--as-of"),
        (["timeline", "c1", "--as-of", "9999-12-31T23:59-01:00"], "--as-of"),
        (["state", "c1", "--as-of", "1899-12-31"], "--as-of"),
        (["as-seen", "c1", "--user", "u1", "--at", "0001-01-01T00:00+00:30"], "--at"),
        (["disclosures", "--client", "cl1", "--from", "9999-12-31T23:00-05:00"], "--from"),
        (["disclosures", "--client", "cl1", "--from", "2026-01-01", "--to", "2200-01-01"], "--to"),
    ],
)
def test_moments_beyond_the_services_bounds_are_refused_naming_the_option(
    argv: list[str],
    option: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One at the ends of Python's dates overflowed when converted: a traceback (exit 1)."""
    monkeypatch.setenv("CASETRAIL_TOKEN", "a.b.c")
    where = ["--audit", "127.0.0.1:1", "--data-dir", str(tmp_path)]
    code, err = _run(capsys, *argv, *where)
    assert code == 2
    assert err.startswith(f"{option}: ")
    assert "Traceback" not in err


def test_a_console_port_it_cannot_listen_on_is_named(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port taken or out of range ended in a traceback (OSError, OverflowError; exit 1)."""
    import socket

    monkeypatch.delenv("CASETRAIL_OIDC_ISSUER", raising=False)
    argv = ("console", "--audit", "127.0.0.1:1", "--data-dir", str(data_dir), "--port")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, err = _run(capsys, *argv, str(port))
    assert code == 2
    assert f"console: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "Traceback" not in err
    for beyond in ("65536", "-1"):
        code, err = _run(capsys, *argv, beyond)
        assert code == 2
        assert "--port: must be a whole number from 0 to 65535" in err


def test_a_console_host_in_brackets_is_the_address_within(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--host [::1]`` (as in a URL) was bound as the name "[::1]" and failed, and was not
    known as loopback: the development sign-in was refused on it."""
    import socket

    monkeypatch.delenv("CASETRAIL_OIDC_ISSUER", raising=False)
    argv = ("console", "--audit", "127.0.0.1:1", "--data-dir", str(data_dir), "--host", "[::1]")
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as taken:
        port = taken.getsockname()[1]
        code, err = _run(capsys, *argv, "--port", str(port))
    assert code == 2
    assert f"console: cannot listen on [::1]:{port}: Address already in use" in err


@pytest.mark.parametrize("where", ["--audit", "addresses.json"])
def test_a_console_audit_address_whose_port_is_no_port_is_refused_before_serving(
    where: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """127.0.0.1:70000 was accepted and the console dialled audit at port 4464."""
    import cli.console

    async def served(*args: object) -> int:
        return 0

    monkeypatch.setattr(cli.console, "_serve", served)
    monkeypatch.delenv("CASETRAIL_OIDC_ISSUER", raising=False)
    if where == "addresses.json":
        (data_dir / "addresses.json").write_text('{"audit": "127.0.0.1:70000"}')
        given: tuple[str, ...] = ()
    else:
        given = ("--audit", "127.0.0.1:70000")
    code, err = _run(capsys, "console", *given, "--data-dir", str(data_dir), "--port", "0")
    assert code == 2
    assert f"{where}" in err
    assert "127.0.0.1:70000: the port must be from 1 to 65535" in err


@pytest.mark.parametrize(
    ("bootstrap", "problem"),
    [
        ("notahost:abc", "'notahost:abc' is not host:port"),
        ("127.0.0.1:70000", "127.0.0.1:70000: the port must be from 1 to 65535"),
        ("127.0.0.1:9092,", "'' is not host:port"),
        ("[::1:19270", "'[::1:19270' is not host:port (an IPv6 address in brackets"),
        ("[a]b:19270", "'[a]b:19270' is not host:port (an IPv6 address in brackets"),
        ("::1:19270", "'::1:19270' is not host:port (an IPv6 address in brackets"),
        ("[kafka]:19270", "'[kafka]:19270': the host is no host name or address"),
        ("\udcff:19270", "'\\udcff:19270': the host is no host name or address"),
        ("a..b:19270", "'a..b:19270': the host is no host name or address"),
    ],
)
def test_a_dlq_bootstrap_that_names_no_broker_is_refused_naming_the_option(
    bootstrap: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Kafka client failed on it with a traceback (int('abc'), connect()'s range, an
    unclosed bracket, a host its resolver could not encode: $'\\xff' is a lone surrogate)."""
    code, err = _run(capsys, "dlq", "list", "--bootstrap", bootstrap)
    assert code == 2
    assert err.startswith(f"casetrail dlq: --bootstrap: {problem}")


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:99999", "127.0.0.1:abc", "[::1:19270"])
def test_a_kafka_bootstrap_variable_dlq_cannot_use_is_named(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CASETRAIL_KAFKA_BOOTSTRAP was never checked: OverflowError, ValueError tracebacks."""
    import cli.dlq
    from casetrail_platform.bus.kafka_settings import KafkaSettings

    monkeypatch.setenv("CASETRAIL_KAFKA_BOOTSTRAP", bootstrap)
    code, err = _run(capsys, "dlq", "list")
    assert code == 2
    assert err.startswith("casetrail dlq: Kafka settings: CASETRAIL_KAFKA_BOOTSTRAP: "), err
    assert "Traceback" not in err

    used: list[KafkaSettings] = []

    async def list_topics(settings: KafkaSettings) -> int:
        used.append(settings)
        return 0

    # --bootstrap replaces the variable: what it held no longer matters.
    monkeypatch.setattr(cli.dlq, "_list_topics", list_topics)
    code, _ = _run(capsys, "dlq", "list", "--bootstrap", "[::1]:9092, kafka-1:9092")
    assert code == 0
    assert used[0].bootstrap_servers == "[::1]:9092, kafka-1:9092"


def test_dlq_bootstrap_keeps_the_kafka_security_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--bootstrap replaced every Kafka setting: plain text to a SASL or TLS cluster."""
    import cli.dlq
    from casetrail_platform.bus.kafka_settings import KafkaSettings

    used: list[KafkaSettings] = []

    async def list_topics(settings: KafkaSettings) -> int:
        used.append(settings)
        return 0

    monkeypatch.setattr(cli.dlq, "_list_topics", list_topics)
    monkeypatch.setenv("CASETRAIL_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CASETRAIL_KAFKA_SASL_USERNAME", "casetrail")
    monkeypatch.setenv("CASETRAIL_KAFKA_SASL_PASSWORD", "pw")
    code, _ = _run(capsys, "dlq", "list", "--bootstrap", "broker.internal:9093")
    assert code == 0
    assert used[0].bootstrap_servers == "broker.internal:9093"
    assert used[0].security.protocol == "SASL_PLAINTEXT"
    monkeypatch.setenv("CASETRAIL_KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    code, err = _run(capsys, "dlq", "list", "--bootstrap", "broker.internal:9093")
    assert code == 2
    assert err.startswith("casetrail dlq: Kafka settings: CASETRAIL_KAFKA_SECURITY_PROTOCOL")


@pytest.mark.parametrize(
    "command",
    [
        ["parked", "list", "intake"],
        ["rebuild", "intake", "client-directory"],
        ["verify-store", "intake"],
    ],
)
def test_a_kafka_setting_the_store_commands_cannot_use_is_named(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASETRAIL_KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    dsn = "postgresql://casetrail@127.0.0.1:1/casetrail"
    code, err = _run(capsys, *command, "--backend", "distributed", "--pg-dsn", dsn)
    assert code == 2
    assert err.startswith("Kafka settings: CASETRAIL_KAFKA_SECURITY_PROTOCOL"), err


@pytest.mark.parametrize("command", ["verify", "verify-store"])
def test_a_missing_keys_file_is_named(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export.jsonl"
    export.write_text("")
    (tmp_path / "intake").mkdir()
    (tmp_path / "intake" / "events.db").write_bytes(b"")
    target = str(export) if command == "verify" else "intake"
    missing = str(tmp_path / "nonexistent")
    code, err = _run(capsys, command, target, "--keys", missing, "--data-dir", str(tmp_path))
    assert code == 2
    assert f"--keys {missing}: cannot read" in err


# --- login ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--user", "bad user!"], "--user"),
        (["--user", "kim", "--agency", "an agency"], "--agency"),
        (["--user", "kim", "--team", "x" * 65], "--team"),
        (["--user", "kim", "--entitlement", "Break Glass"], "--entitlement"),
    ],
)
def test_login_refuses_what_every_service_would_refuse_and_keeps_the_saved_token(
    data_dir: Path, extra: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = identity_dir(data_dir) / TOKEN_FILE
    saved.write_text("the previous token\n")
    code, err = _run(capsys, "login", *extra, "--role", "auditor", "--data-dir", str(data_dir))
    assert code == 2
    assert option in err
    assert saved.read_text() == "the previous token\n"


def test_login_saves_the_token_owner_only_even_over_a_readable_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = identity_dir(data_dir)
    assert folder.stat().st_mode & 0o777 == 0o700
    saved = folder / TOKEN_FILE
    saved.write_text("old\n")
    saved.chmod(0o644)
    code, _ = _run(
        capsys, "login", "--user", "kim", "--role", "auditor", "--data-dir", str(data_dir)
    )
    assert code == 0
    assert saved.stat().st_mode & 0o777 == 0o600
    assert saved.read_text().count(".") == 2
    assert sorted(os.listdir(folder)) == sorted(
        ["DEVELOPMENT-ONLY-issuer.json", "DEVELOPMENT-ONLY-signing-key.pem", TOKEN_FILE]
    )


def test_the_login_bound_is_the_verifiers_maximum_lifetime() -> None:
    assert MAX_LOGIN_HOURS * 3600 == DEFAULT_MAX_LIFETIME_SECONDS


# --- export --------------------------------------------------------------------------------------


def test_a_failed_export_leaves_the_file_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "case.jsonl"
    output.write_text("precious\n")
    # Nothing listens on port 1: the call fails (UNAVAILABLE) before any line arrives.
    code, err = _run(
        capsys, "export", "c1", "-o", str(output), "--audit", "127.0.0.1:1", "--token", "t.t.t"
    )
    assert code == 1
    assert "refused" in err
    assert output.read_text() == "precious\n"
    assert os.listdir(tmp_path) == ["case.jsonl"]
    assert not (tmp_path / "new.jsonl").exists()
    code, _ = _run(
        capsys, "export", "c1", "-o", str(tmp_path / "new.jsonl"),
        "--audit", "127.0.0.1:1", "--token", "t.t.t",
    )  # fmt: skip
    assert code == 1
    assert os.listdir(tmp_path) == ["case.jsonl"]


def test_a_replacement_is_owner_only_and_renamed_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"old")
    path.chmod(0o644)

    def broken_stream() -> None:
        with private_replacement(path) as file:
            file.write(b"half")
            raise RuntimeError("the stream broke")

    with pytest.raises(RuntimeError):
        broken_stream()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out"]
    with private_replacement(path) as file:
        file.write(b"whole")
    assert path.read_bytes() == b"whole"
    assert path.stat().st_mode & 0o777 == 0o600


def test_errors_of_a_task_group_end_in_one_line_only_when_each_is_expected() -> None:
    """`tail` follows its stores in a task group: a database away, or the reader gone, in
    every task is one line (or a quiet end); anything else among them stays a traceback."""
    from casetrail_platform.errors import StorageUnavailableError
    from cli.main import _reader_gone, _unavailable

    away = StorageUnavailableError("intake_events event store")
    assert _unavailable(ExceptionGroup("tail", [away, away])) == str(away)
    assert _unavailable(ExceptionGroup("tail", [away, ValueError("bug")])) is None
    assert _unavailable(ValueError("bug")) is None
    assert _reader_gone(ExceptionGroup("tail", [BrokenPipeError()]))
    assert not _reader_gone(ExceptionGroup("tail", [BrokenPipeError(), ValueError("bug")]))


def test_a_service_asked_twice_is_tailed_once() -> None:
    """Tailed twice, its every event would be printed, and recorded as accessed, twice."""
    asked = ["intake", "planning", "intake"]
    assert tailed_services(asked, lambda name: True) == ["intake", "planning"]
    assert tailed_services(None, lambda name: name == "audit") == ["audit"]


def test_a_task_group_of_stores_away_ends_in_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tail`'s group reached a handler that re-raised it before the one-line check."""
    import cli.tail
    from casetrail_platform.errors import StorageUnavailableError
    from casetrail_platform.keys.port import KeyUnavailableError

    def tail_away(options: argparse.Namespace) -> int:
        raise ExceptionGroup(
            "tail",
            [StorageUnavailableError("intake_events event store"), KeyUnavailableError("keys")],
        )

    monkeypatch.setattr(cli.tail, "run", tail_away)
    code, err = _run(capsys, "tail", "--data-dir", str(tmp_path))
    assert code == 1
    assert err.startswith("casetrail tail: the intake_events event store is unavailable")
    assert "Traceback" not in err


# --- tail on the distributed backend --------------------------------------------------------------


def test_tail_on_the_distributed_backend_trusts_no_development_issuer(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The distributed services never start without a real issuer; the tail took the key of a
    development issuer in --data-dir (anyone's to make) as theirs, before any store."""
    from casetrail_platform.identity.development import DevelopmentSigner

    monkeypatch.delenv("CASETRAIL_OIDC_ISSUER", raising=False)
    monkeypatch.delenv("CASETRAIL_PG_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("CASETRAIL_TOKEN", DevelopmentSigner.load(data_dir).mint("kim", "auditor"))
    nowhere = "postgresql://fixcli@127.0.0.1:1/fixcli_none"  # never connected to
    code, err = _run(
        capsys, "tail", "--backend", "distributed", "--pg-dsn", nowhere, "--data-dir", str(data_dir)
    )
    assert code == 2
    assert "the distributed backend needs CASETRAIL_OIDC_ISSUER" in err
    with pytest.raises(SystemExit):
        trusted_verifier(data_dir, distributed=True)
    trusted_verifier(data_dir, distributed=False)  # the embedded services trust it


@pytest.mark.parametrize(
    ("dsn", "named"),
    [
        (["--pg-dsn", "host=127.0.0.1 password=SECRET dbname"], "--pg-dsn"),
        (["--pg-dsn", "postgresql://kim:SECRET@[::1"], "--pg-dsn"),
        ([], "CASETRAIL_PG_DSN"),
    ],
)
@pytest.mark.parametrize("command", [["tail"], ["parked", "list", "intake"]])
def test_a_malformed_postgres_dsn_is_named_without_its_password(
    command: list[str],
    dsn: list[str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The driver's ProgrammingError was a traceback quoting the DSN, password and all."""
    monkeypatch.setenv("CASETRAIL_PG_DSN", "host=127.0.0.1 password=SECRET port")
    monkeypatch.delenv("CASETRAIL_PG_PASSWORD_FILE", raising=False)
    argv = [*command, "--backend", "distributed", *dsn, "--data-dir", str(tmp_path)]
    code, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith(f"{named}: not a PostgreSQL connection string")
    assert "SECRET" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        ("postgresql://kim:SECRET@::1:15570/casetrail", "the port must be a number from 1 to"),
        ("host=127.0.0.1 password=SECRET port=abc dbname=casetrail", "the port must be a number"),
        ("postgresql://kim:SECRET@127.0.0.1:99999/casetrail", "the port must be a number"),
        ("postgresql://kim:SECRET@h1:15570,h2:0/casetrail", "the port must be a number"),
        (
            "postgresql://kim:SECRET@127.0.0.1:15570/casetrail?sslmode=bogus",
            "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full,"
            " got 'bogus'",
        ),
        ("password=SECRET target_session_attrs=primaryish", "target_session_attrs must be one of"),
        ("password=SECRET gssencmode=", "gssencmode must be one of"),
    ],
)
@pytest.mark.parametrize("command", [["tail"], ["parked", "list", "intake"]])
def test_a_postgres_dsn_libpq_refuses_is_a_usage_error_named_without_its_password(
    command: list[str],
    dsn: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """libpq checks these values only when it connects: exit 1, "unavailable; retry later",
    blaming the database (``@::1:15570`` named no host and the port ':1:15570')."""
    monkeypatch.delenv("CASETRAIL_PG_PASSWORD_FILE", raising=False)
    argv = [*command, "--backend", "distributed", "--data-dir", str(tmp_path)]
    code, err = _run(capsys, *argv, "--pg-dsn", dsn)
    assert code == 2
    assert err.startswith(f"--pg-dsn: {problem}"), err
    assert "SECRET" not in err
    monkeypatch.setenv("CASETRAIL_PG_DSN", dsn)
    code, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith(f"CASETRAIL_PG_DSN: {problem}"), err


# --- text a service is sent ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["timeline", "c1", "--purpose", "\udcff"], "--purpose"),
        (["state", "c\udcff"], "case_id"),
        (["as-seen", "c1", "--user", "u1", "--at", "2026-01-01", "--user-team", "\udcff"],
         "--user-team"),
        (["break-glass", "open", "c1", "--reason", "why \udcff"], "--reason"),
        (["tail", "--purpose", "\udcff"], "--purpose"),
    ],
)  # fmt: skip
def test_text_that_is_not_utf8_is_refused_naming_the_option(
    argv: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """$'\\xff' arrives as a lone surrogate, which the request could not encode: exit 1,
    "audit answered something this CLI cannot read", blaming the service."""
    code, err = _run(capsys, *argv, "--data-dir", str(tmp_path), "--token", "a.b.c")
    assert code == 2
    assert f"argument {option}: not UTF-8 text" in err


async def test_a_tail_shows_a_case_whose_id_starts_like_its_own_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case ``tail-probe1``'s accesses go to ``access-tail-probe1``, which the tail took for
    one of its own streams by the prefix and never showed; its own records stay unshown."""
    store = await SqliteEventStore.open(tmp_path / "events.db", default_registry())
    try:
        probe = RecordAccessed(
            case_id="tail-probe1",
            accessor_id="sam",
            accessor_role=Role.AUDITOR,
            purpose=AccessPurpose.CONFIDENTIALITY_REVIEW,
            sections=(RecordSection.IDENTITY,),
            rule="auditor-review",
            policy_version="2026.12-4",
        )
        metadata = EventMetadata(
            "casetrail/intake", Actor("sam", Role.AUDITOR), datetime.now(UTC), uuid4()
        )
        await store.append("access-tail-probe1", [NewEvent(probe, metadata)], ANY_VERSION)
        await tailed_briefly(store)  # the probe shown and recorded, then that record read back
        shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["stream"] for line in shown] == ["access-tail-probe1"]
        own = [r for r in await store.read_all(0) if r.stream != "access-tail-probe1"]
        assert len(own) == 1  # the tail's record of the probe: neither shown nor recorded
        assert tails_own(own[0])
    finally:
        await store.close()
