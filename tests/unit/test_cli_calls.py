"""`casetrail` commands against a stand-in audit service: what they print for an empty answer
and how they end when the service does not answer."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail_platform.identity.development import identity_dir
from cli.login import TOKEN_FILE
from cli.main import TOKEN_VISIBLE, main


@dataclass
class _Audit(audit_pb2_grpc.AuditServiceServicer):
    """Answers GetTimeline with ``timeline`` (an empty page by default), or not at all until
    released, or refuses it with ``details`` as its grpc-status-details-bin; GetCaseStateAsOf
    with ``state``."""

    hang: bool = False
    released: threading.Event = field(default_factory=threading.Event)
    bearers: list[str] = field(default_factory=list)
    timeline: audit_pb2.GetTimelineResponse = field(
        default_factory=lambda: audit_pb2.GetTimelineResponse(total_events=0)
    )
    details: bytes | None = None
    state: audit_pb2.GetCaseStateAsOfResponse = field(
        default_factory=audit_pb2.GetCaseStateAsOfResponse
    )

    def GetTimeline(self, request: Any, context: Any) -> audit_pb2.GetTimelineResponse:  # noqa: N802
        self.bearers += [v for k, v in context.invocation_metadata() if k == "authorization"]
        if self.hang:
            self.released.wait(30)
        if self.details is not None:
            context.set_trailing_metadata((("grpc-status-details-bin", self.details),))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
        return self.timeline

    def GetCaseStateAsOf(self, request: Any, context: Any) -> audit_pb2.GetCaseStateAsOfResponse:  # noqa: N802
        return self.state


@pytest.fixture
def audit() -> Iterator[tuple[_Audit, str]]:
    servicer = _Audit()  # type: ignore[abstract]  # only GetTimeline, GetCaseStateAsOf
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        servicer.released.set()
        server.stop(None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


ENVIRONMENT_TOKEN = "environment.payload.signature"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASETRAIL_TOKEN", ENVIRONMENT_TOKEN)


def test_an_empty_timeline_says_so_without_a_blank_line(
    audit: tuple[_Audit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "timeline", "case-1", "--audit", audit[1])
    assert code == 0
    assert out == "0 events\n"


# --- where the token comes from ------------------------------------------------------------------


def test_a_token_on_the_command_line_works_and_is_said_to_be_visible(
    audit: tuple[_Audit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "timeline", "case-1", "--audit", audit[1], "--token", "a.b.c")
    assert code == 0
    assert audit[0].bearers == ["Bearer a.b.c"]
    assert TOKEN_VISIBLE in err
    assert "visible to other users" in TOKEN_VISIBLE
    assert "a.b.c" not in err


def test_a_token_file_owner_only_is_used_before_the_variable_and_the_saved_login(
    audit: tuple[_Audit, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = identity_dir(tmp_path) / TOKEN_FILE
    saved.parent.mkdir(parents=True)
    saved.write_text("saved.payload.signature\n")
    saved.chmod(0o600)  # as casetrail login writes it
    token_file = tmp_path / "token"
    token_file.write_text("file.payload.signature\n")
    token_file.chmod(0o600)
    where = ("timeline", "case-1", "--audit", audit[1], "--data-dir", str(tmp_path))

    assert _run(capsys, *where, "--token-file", str(token_file))[0] == 0
    assert _run(capsys, *where)[0] == 0  # then CASETRAIL_TOKEN
    os.environ.pop("CASETRAIL_TOKEN")  # restored by monkeypatch
    code, _, err = _run(capsys, *where)  # then the saved login
    assert code == 0
    assert audit[0].bearers == [
        "Bearer file.payload.signature",
        f"Bearer {ENVIRONMENT_TOKEN}",
        "Bearer saved.payload.signature",
    ]
    assert "warning" not in err


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606])
def test_a_token_file_others_can_read_is_refused_naming_it(
    mode: int, audit: tuple[_Audit, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("SECRET.payload.signature")
    token_file.chmod(mode)
    argv = ("timeline", "case-1", "--audit", audit[1], "--token-file", str(token_file))
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert f"--token-file {token_file}: the bearer token is readable by others" in err
    assert "chmod 600" in err
    assert "SECRET" not in out + err
    assert audit[0].bearers == []  # nothing was sent


def test_a_saved_login_others_can_read_is_refused_naming_it(
    audit: tuple[_Audit, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The saved login is held to --token-file's rules (it was read whatever its mode).
    saved = identity_dir(tmp_path) / TOKEN_FILE
    saved.parent.mkdir(parents=True)
    saved.write_text("SECRET.payload.signature\n")
    saved.chmod(0o644)
    os.environ.pop("CASETRAIL_TOKEN")  # restored by monkeypatch
    where = ("timeline", "case-1", "--audit", audit[1], "--data-dir", str(tmp_path))
    code, out, err = _run(capsys, *where)
    assert code == 2
    assert f"{saved}: the saved token is readable by others" in err
    assert "SECRET" not in out + err
    assert audit[0].bearers == []


def test_a_token_file_that_is_missing_or_too_large_is_refused_naming_it(
    audit: tuple[_Audit, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    large = tmp_path / "large"
    large.write_text("x" * 100_000)
    large.chmod(0o600)
    where = ("timeline", "case-1", "--audit", audit[1], "--token-file")
    code, _, err = _run(capsys, *where, str(tmp_path / "missing"))
    assert code == 2
    assert f"--token-file {tmp_path / 'missing'}: cannot read the token" in err
    code, _, err = _run(capsys, *where, str(large))
    assert code == 2
    assert f"--token-file {large}: the bearer token is larger than" in err
    assert audit[0].bearers == []


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--token", "", "--token: empty"),
        ("--token", " \n", "--token: empty"),
        ("--token-file", "", "--token-file: empty"),
        ("--token-file", "  ", "--token-file: empty"),
        ("--token-file", "EMPTY_FILE", "--token-file {empty}: empty"),
    ],
)
def test_an_empty_token_given_is_refused_never_replaced_by_the_saved_login(
    option: str,
    value: str,
    named: str,
    audit: tuple[_Audit, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--token "$UNSET"`` ran, and was recorded, as whoever last logged in on the data dir."""
    saved = identity_dir(tmp_path) / TOKEN_FILE
    saved.parent.mkdir(parents=True)
    saved.write_text("saved.payload.signature\n")
    saved.chmod(0o600)
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    empty.chmod(0o600)
    os.environ.pop("CASETRAIL_TOKEN")  # restored by monkeypatch
    value = str(empty) if value == "EMPTY_FILE" else value
    where = ("timeline", "case-1", "--audit", audit[1], "--data-dir", str(tmp_path))
    code, out, err = _run(capsys, *where, option, value)
    assert code == 2
    assert named.format(empty=empty) in err
    assert out == ""
    assert audit[0].bearers == []  # nothing was sent, as nobody


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_token_variable_is_refused_never_replaced_by_the_saved_login(
    value: str,
    audit: tuple[_Audit, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Set to nothing (``export CASETRAIL_TOKEN="$UNSET"``) is the same slip as ``--token ""``;
    unset, the saved login is used."""
    saved = identity_dir(tmp_path) / TOKEN_FILE
    saved.parent.mkdir(parents=True)
    saved.write_text("saved.payload.signature\n")
    saved.chmod(0o600)
    monkeypatch.setenv("CASETRAIL_TOKEN", value)
    where = ("timeline", "case-1", "--audit", audit[1], "--data-dir", str(tmp_path))
    code, _, err = _run(capsys, *where)
    assert code == 2
    assert "CASETRAIL_TOKEN: empty (unset it to use the saved login)" in err
    assert audit[0].bearers == []
    monkeypatch.delenv("CASETRAIL_TOKEN")
    assert _run(capsys, *where)[0] == 0
    assert audit[0].bearers == ["Bearer saved.payload.signature"]


def test_help_recommends_the_login_the_file_or_the_variable_over_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["timeline", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "VISIBLE TO OTHER USERS" in help_text
    assert "prefer `casetrail login`, --token-file or $CASETRAIL_TOKEN" in help_text


# --- a service that does not answer --------------------------------------------------------------


def test_a_service_that_does_not_answer_ends_the_command_naming_the_deadline(
    audit: tuple[_Audit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """It hung the command for as long as the service did."""
    audit[0].hang = True
    code, out, err = _run(capsys, "timeline", "case-1", "--audit", audit[1], "--timeout", "0.5")
    assert code == 1
    assert out == ""
    assert "DEADLINE_EXCEEDED: no answer within 0.5 seconds (--timeout)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        ["timeline", "c1"],
        ["ledger", "keys"],
        ["break-glass", "reviews"],
        ["client", "correct-birth-date", "cl1", "--date", "1950-01-01", "--reason", "r"],
    ],
)
def test_every_command_calling_a_service_waits_thirty_seconds_by_default(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import parser

    assert parser().parse_args(command).timeout == 30.0
    for bad in ("0", "nan", "inf", "3601"):
        with pytest.raises(SystemExit):
            parser().parse_args([*command, "--timeout", bad])
        assert "--timeout" in capsys.readouterr().err


# --- answers this CLI cannot read ----------------------------------------------------------------


@pytest.mark.parametrize(
    "summary", ["Dr Who clinic 2024-02-30T10:00Z", "at 0001-01-01T00:00+01:00 sharp"]
)
def test_a_summary_holding_no_real_instant_is_shown_as_written(
    summary: str, audit: tuple[_Audit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Summaries hold names people typed (a consent's recipient): one that looks like an
    instant but is none crashed `casetrail timeline` for the case, for every auditor."""
    entries = [
        audit_pb2.TimelineEntry(summary=summary, event_type="casetrail.consent.granted"),
        audit_pb2.TimelineEntry(summary="seen 2024-02-03T10:00+01:00", event_type="x"),
    ]
    audit[0].timeline = audit_pb2.GetTimelineResponse(entries=entries, total_events=2)

    code, out, err = _run(capsys, "timeline", "case-1", "--audit", audit[1])

    assert (code, err) == (0, "")
    assert summary in out
    assert "seen 2024-02-03 09:00" in out  # a real one still shown on the clock


def _entry_at(seconds: int) -> audit_pb2.TimelineEntry:
    entry = audit_pb2.TimelineEntry(summary="x")
    entry.occurred_at.seconds = seconds
    return entry


def _state_as_of(seconds: int) -> audit_pb2.GetCaseStateAsOfResponse:
    answer = audit_pb2.GetCaseStateAsOfResponse()
    answer.as_of.seconds = seconds
    return answer


@pytest.mark.parametrize(
    ("answer", "command", "said"),
    [
        (
            audit_pb2.GetTimelineResponse(
                entries=[audit_pb2.TimelineEntry(cloudevent_json="{not json")], total_events=1
            ),
            ["timeline", "c1", "--json"],
            "Expecting property name",
        ),
        (
            audit_pb2.GetTimelineResponse(entries=[_entry_at(2**62)], total_events=1),
            ["timeline", "c1"],
            "Timestamp is not valid",
        ),
        (_state_as_of(-(2**62)), ["state", "c1"], "Timestamp is not valid"),
    ],
)
def test_an_answer_out_of_range_or_no_json_is_named_not_a_traceback(
    answer: Any,
    command: list[str],
    said: str,
    audit: tuple[_Audit, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    if isinstance(answer, audit_pb2.GetTimelineResponse):
        audit[0].timeline = answer
    else:
        audit[0].state = answer

    code, _, err = _run(capsys, *command, "--audit", audit[1])

    assert code == 1
    assert err.startswith("audit answered something this CLI cannot read: "), err
    assert said in err


@pytest.mark.parametrize(
    "details",
    [
        status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="other"),
        b"\xff\xff\xff",
    ],
    ids=["details-of-another-code", "details-not-a-status"],
)
def test_a_refusal_whose_details_cannot_be_read_is_told_by_its_code(
    details: status_pb2.Status | bytes,
    audit: tuple[_Audit, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A proxy's or a misbehaving server's details (another code's, or not a Status at all)
    ended the command with a traceback instead of the refusal."""
    audit[0].details = details if isinstance(details, bytes) else details.SerializeToString()

    code, _, err = _run(capsys, "timeline", "c1", "--audit", audit[1])

    assert (code, err) == (1, "refused: PERMISSION_DENIED: denied\n")


def test_a_case_status_this_cli_does_not_know_is_shown_by_its_number(
    audit: tuple[_Audit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A newer audit's status (version skew) ended `casetrail state` with a traceback."""
    audit[0].state.state.status = 99  # type: ignore[assignment]

    code, out, _ = _run(capsys, "state", "c1", "--audit", audit[1])

    assert code == 0
    assert "  status 99" in out
