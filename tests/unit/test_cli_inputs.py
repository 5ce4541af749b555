"""`casetrail` given plausible bad input: one clear line and a non-zero exit, never a traceback;
and the files it writes (a saved token, an export) owner-only and whole or not at all."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from casetrail_platform.identity.development import DevelopmentIssuer, identity_dir
from casetrail_platform.identity.verifier import DEFAULT_MAX_LIFETIME_SECONDS
from casetrail_platform.private_files import private_replacement
from cli.login import TOKEN_FILE, bearer_token, trusted_verifier
from cli.main import MAX_LOGIN_HOURS, main
from cli.tail import tailed_services


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
        bearer_token(argparse.Namespace(token="", data_dir=str(tmp_path)))
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
        trusted_verifier(tmp_path)  # what `casetrail tail` checks its token with
    assert "CASETRAIL_OIDC_AUDIENCE" in str(exit_.value.code)
    code, err = _run(capsys, "console", "--port", "0", "--data-dir", str(tmp_path))
    assert code == 2
    assert "CASETRAIL_OIDC_AUDIENCE" in err


# --- numbers and files given on the command line -------------------------------------------------


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
        assert "--port: must be from 0 to 65535" in err


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
