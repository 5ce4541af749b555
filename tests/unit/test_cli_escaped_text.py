"""What staff typed reaches `casetrail`'s human-readable listings escaped (``cli.present.shown``):
a provider's name, an emergency access's reason, a disclosure's description. Raw, a carriage
return made the rest of a timeline line overwrite its time, actor and type, a line feed forged a
whole entry (a referral made by another coordinator, a supervisor's approval), and an escape
sequence or a right-to-left override rewrote what the auditor's terminal showed. ``--json`` was
never affected."""

from __future__ import annotations

import asyncio
import sys
import unicodedata
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.bus.deadletter import DeadLetter
from casetrail_platform.bus.kafka_dead_letters import StoredDeadLetter
from casetrail_platform.bus.message import BusMessage
from cli.break_glass import access_line
from cli.dlq import describe
from cli.main import main
from cli.present import activity_lines, case_view_lines, shown
from cli.rpc import answered, command_channel
from events.dead_letters import DeadLetterReason

FORGED = (
    "Eastside Physical Therapy"
    "\r  2026-11-23 12:00 casetrail/coordination coordinator:maria.santos"
    " casetrail.referral.made  referred the client to Eastside Physical Therapy"
    "\n  2026-11-23 12:01 casetrail/planning     supervisor:kim.boss"
    " casetrail.record.accessed  referral approved"
    "\x1b[2K\x9b1m\u202egnp.exe\u2066x\u2069\u2028"
)
"""Text a social worker typed as a provider's name (the reviewer's, and the rest of it)."""
ESCAPED = ("\\r  2026-11-23 12:00", "\\n  2026-11-23 12:01", "\\x1b[2K", "\\x9b1m", "\\u202egnp")

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Unicode's Bidi_Control characters (PropList.txt): they reorder a line as it is shown."""


def acts_on_a_terminal(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in BIDI_CONTROLS


def assert_shown_escaped(out: str, lines: int) -> None:
    """``out`` holds ``lines`` lines, nothing in them a terminal acts on, ``FORGED`` escaped."""
    assert len(out.split("\n")) == lines + 1  # the last line's end, and no other
    assert not [char for char in out.replace("\n", "") if acts_on_a_terminal(char)], out
    for escaped in ESCAPED:
        assert escaped in out, out


def test_every_character_a_terminal_acts_on_is_escaped_and_nothing_else() -> None:
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        if unicodedata.category(char) == "Cs":
            continue  # a lone surrogate is no text a service answers (protobuf refuses it)
        escaped = shown(char)
        assert (escaped != char) == (acts_on_a_terminal(char) or char == "\\"), hex(point)
        assert not any(acts_on_a_terminal(each) for each in escaped), hex(point)
    assert shown("a\r\n\t\x1b\x9b\u202e\\b") == "a\\r\\n\\t\\x1b\\x9b\\u202e\\\\b"
    # A zero-width joiner moves nothing: an emoji or a name keeps it.
    assert shown("Zoë 👩\u200d⚕️") == "Zoë 👩\u200d⚕️"


def _moment() -> Timestamp:
    moment = Timestamp()
    moment.FromDatetime(datetime(2026, 11, 23, 11, 58, tzinfo=UTC))
    return moment


def _state() -> audit_pb2.CaseState:
    return audit_pb2.CaseState(
        case_id="case-1",
        client_id=FORGED,
        closure_reason=FORGED,
        events_applied=1,
        last_event_at=_moment(),
        assignment=audit_pb2.Assignment(worker_id=FORGED, worker_role="social_worker"),
        referrals=[audit_pb2.Referral(need_category=FORGED, status="made")],
    )


class _HostileAudit(audit_pb2_grpc.AuditServiceServicer):
    """Audit's answers, each text a person typed replaced by ``FORGED``; a refusal too."""

    def GetTimeline(self, request: Any, context: Any) -> audit_pb2.GetTimelineResponse:  # noqa: N802
        entry = audit_pb2.TimelineEntry(
            event_type="casetrail.referral.made",
            source="casetrail/coordination",
            occurred_at=_moment(),
            actor=common_pb2.Actor(user_id="sw-amara-okafor", role="social_worker"),
            summary=f"referred the client to {FORGED}",
            cloudevent_json="{}",
        )
        return audit_pb2.GetTimelineResponse(entries=[entry], total_events=1)

    def GetCaseStateAsOf(self, request: Any, context: Any) -> audit_pb2.GetCaseStateAsOfResponse:  # noqa: N802
        return audit_pb2.GetCaseStateAsOfResponse(state=_state(), as_of=_moment())

    def GetCaseAsSeen(self, request: Any, context: Any) -> audit_pb2.GetCaseAsSeenResponse:  # noqa: N802
        return audit_pb2.GetCaseAsSeenResponse(
            state=_state(),
            entitlement=audit_pb2.Entitlement(
                allowed=True, rule=FORGED, sections=["core"], withheld_fields=[FORGED]
            ),
            user=audit_pb2.UserAtTime(user_id="kim", role="supervisor", derived_from=FORGED),
            reads=[audit_pb2.AccessRecord(recorded_at=_moment(), source=FORGED, rule="r")],
            reads_total=1,
        )

    def ListDisclosures(self, request: Any, context: Any) -> audit_pb2.ListDisclosuresResponse:  # noqa: N802
        disclosure = audit_pb2.Disclosure(
            disclosed_at=_moment(),
            recipient=audit_pb2.DisclosureRecipient(kind="partner", recipient_id=FORGED),
            description=f"referred to {FORGED}",
        )
        return audit_pb2.ListDisclosuresResponse(
            disclosures=[disclosure],
            total_disclosures=1,
            case_ids=[FORGED],
            period_start=_moment(),
            period_end=_moment(),
        )

    def WhoDidWhat(self, request: Any, context: Any) -> audit_pb2.WhoDidWhatResponse:  # noqa: N802
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no provider {FORGED}")
        raise AssertionError("abort raises")


@pytest.fixture
def audit(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CASETRAIL_TOKEN", "auditor.payload.signature")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    audit_pb2_grpc.add_AuditServiceServicer_to_server(_HostileAudit(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.mark.parametrize(
    ("command", "lines"),
    [
        (("timeline", "case-1"), 2),  # the entry and the count
        (("state", "case-1"), 7),
        (("as-seen", "case-1", "--user", "kim", "--at", "2026-11-24"), 11),
        (("disclosures", "--client", "client-1", "--from", "2026-01-01"), 4),
    ],
)
def test_a_listing_shows_what_staff_typed_escaped(
    command: tuple[str, ...], lines: int, audit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, *command, "--audit", audit)
    assert code == 0, err
    assert_shown_escaped(out, lines)


def test_the_json_of_a_listing_is_left_to_its_reader(
    audit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "state", "case-1", "--audit", audit, "--json")
    assert code == 0
    assert '"closure_reason": "Eastside Physical Therapy\\r' in out  # JSON's own escapes


def test_a_refusal_quoting_what_staff_typed_is_shown_escaped(
    audit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def ask() -> None:
        async with command_channel(audit, 5) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            await stub.WhoDidWhat(audit_pb2.WhoDidWhatRequest(case_id="case-1"))

    assert answered("audit", 5, lambda: asyncio.run(ask())) == 1
    assert_shown_escaped(capsys.readouterr().err, 1)


def test_an_emergency_access_reason_is_shown_escaped() -> None:
    access = intake_pb2.EmergencyAccess(
        emergency_access_id="ea-1",
        case_id="case-1",
        grantee=common_pb2.Actor(user_id="dr-lee", role="social_worker"),
        reason=FORGED,
        opened_at=_moment(),
        expires_at=_moment(),
        review_due_at=_moment(),
    )
    assert_shown_escaped(access_line(access) + "\n", 2)  # the access, and its reason


def test_the_demos_views_show_what_staff_typed_escaped() -> None:
    view = planning_pb2.GetCaseViewResponse(
        case_id="case-1",
        status="open",
        closure_reason=FORGED,
        referrals=[planning_pb2.ReferralView(need_category="mobility", provider_name=FORGED)],
    )
    shown_lines = case_view_lines(view)
    assert_shown_escaped("\n".join(shown_lines) + "\n", len(shown_lines))
    activity = audit_pb2.Activity(
        occurred_at=_moment(),
        actor=common_pb2.Actor(user_id=FORGED, role="coordinator"),
        summary=FORGED,
    )
    assert_shown_escaped("\n".join(activity_lines([activity])) + "\n", 1)


def test_a_dead_letter_is_described_escaped() -> None:
    """Its headers and reason were written by whoever could publish, or quote an event."""
    message = BusMessage(
        topic="casetrail.case-events",
        partition=0,
        offset=7,
        key=b"case-1",
        value=b"{}",
        headers=(
            ("ce_id", FORGED.encode()),
            ("ce_type", b"casetrail.referral.made"),
            ("ce_subject", FORGED.encode()),
        ),
    )
    letter = DeadLetter(
        message, "casetrail.audit.timeline-index-v2", DeadLetterReason.HANDLER_FAILED, FORGED,
        "ValueError", 1,
    )  # fmt: skip
    stored = StoredDeadLetter(record=message, letter=letter, replayed=False)
    assert_shown_escaped(describe(stored) + "\n", 3)  # where and why, the event, the reason
