"""The caseload views' gate (a verified bearer token, a known purpose) and their recorder (audit
decides and records each read before the view answers), against a real audit servicer on a
real grpc.aio server; no Kafka needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.policy.vocabulary import Action
from events.catalog.access import AccessPurpose, RecordAccessDenied, RecordAccessed
from services.caseload.access import Caller, CaseloadGate, Refused
from services.caseload.recording import CASES_PER_CALL, CLIENT_NAME, AccessRecorder
from tests.support.audit_server import RunningAudit, audit_server
from tests.support.caseload import assigned, recovered
from tests.support.identity import TestIssuer
from tests.support.servers import free_port

CASELOADS = audit_pb2.CASELOAD_VIEW_CASELOADS


def get_request(headers: Any, query: Any, match_info: Any) -> Any:
    """A GET of a view, with what the views read of it (no body)."""
    return SimpleNamespace(
        method="GET", body_exists=False, headers=headers, query=query, match_info=match_info
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refusal(gate: CaseloadGate, headers: dict[str, str], query: dict[str, str]) -> Refused:
    with pytest.raises(Refused) as refused:
        await gate.admit(headers, query)
    return refused.value


async def test_a_verified_caller_is_admitted_with_the_purpose_stated(issuer: TestIssuer) -> None:
    gate = CaseloadGate(issuer.verifier())
    token = issuer.mint("james.liu", "auditor")
    caller = await gate.admit(bearer(token), {})
    assert (caller.principal.subject, caller.principal.role.value) == ("james.liu", "auditor")
    assert (caller.token, caller.purpose) == (token, AccessPurpose.CONFIDENTIALITY_REVIEW)
    # Whether the caller may read the caseloads is audit's decision (the recorder, below).
    coordinator = await gate.admit(bearer(issuer.mint("maria", "coordinator")), {})
    assert coordinator.purpose is AccessPurpose.CONFIDENTIALITY_REVIEW
    stated = await gate.admit(bearer(token), {"purpose": "supervision"})
    assert stated.purpose is AccessPurpose.SUPERVISION


async def test_no_or_bad_token_and_unknown_purposes_are_refused(issuer: TestIssuer) -> None:
    gate = CaseloadGate(issuer.verifier())
    auditor = bearer(issuer.mint("james.liu", "auditor"))
    cases = [
        ({}, {}, 401, "TOKEN_MISSING"),
        ({"Authorization": "Basic abc"}, {}, 401, "TOKEN_MALFORMED"),
        (auditor, {"purpose": "gossip"}, 400, "PURPOSE_UNKNOWN"),
    ]
    for headers, query, status, code in cases:
        refused = await refusal(gate, headers, query)
        assert (refused.status, refused.code) == (status, code), (headers, query)


async def test_without_an_issuer_nobody_is_admitted(issuer: TestIssuer) -> None:
    refused = await refusal(CaseloadGate(None), bearer(issuer.mint("j", "auditor")), {})
    assert (refused.status, refused.code) == (503, "ISSUER_NOT_CONFIGURED")


@pytest.fixture
async def audit(tmp_path: Path, issuer: TestIssuer) -> AsyncIterator[RunningAudit]:
    async with audit_server(tmp_path, issuer) as running:
        yield running


async def caller(issuer: TestIssuer, user: str, role: str) -> Caller:
    return await CaseloadGate(issuer.verifier()).admit(bearer(issuer.mint(user, role)), {})


async def test_a_long_view_is_recorded_in_chunks_under_the_callers_own_name(
    audit: RunningAudit, issuer: TestIssuer
) -> None:
    recorder = AccessRecorder(audit.address)
    cases = [f"case-{n:04d}" for n in range(2 * CASES_PER_CALL + 50)]
    try:
        await recorder.record(await caller(issuer, "james.liu", "auditor"), CASELOADS, cases)
    finally:
        await recorder.close()
    events = await audit.store.read_all(limit=10_000)
    accesses = [e.event for e in events if isinstance(e.event, RecordAccessed)]
    assert [a.case_id for a in accesses] == cases
    assert {(a.accessor_id, a.client_application) for a in accesses} == {("james.liu", CLIENT_NAME)}


async def test_a_refused_reader_is_refused_and_every_case_named_has_the_refusal(
    audit: RunningAudit, issuer: TestIssuer
) -> None:
    recorder = AccessRecorder(audit.address)
    cases = [f"case-{n:04d}" for n in range(CASES_PER_CALL + 1)]
    try:
        with pytest.raises(Refused) as refused:
            await recorder.record(await caller(issuer, "maria", "coordinator"), CASELOADS, cases)
    finally:
        await recorder.close()
    assert (refused.value.status, refused.value.code) == (403, "ROLE_NOT_ALLOWED")
    events = await audit.store.read_all(limit=10_000)
    assert not [e for e in events if isinstance(e.event, RecordAccessed)]
    denied = [e.event.case_id for e in events if isinstance(e.event, RecordAccessDenied)]
    assert denied == cases


async def test_without_audit_nothing_is_answered(issuer: TestIssuer) -> None:
    auditor = await caller(issuer, "james.liu", "auditor")
    for recorder, code in (
        (AccessRecorder(None), "AUDIT_NOT_CONFIGURED"),
        # Nothing listens there: the call fails, so the view must not answer.
        (AccessRecorder(f"127.0.0.1:{free_port()}"), "AUDIT_UNAVAILABLE"),
    ):
        try:
            with pytest.raises(Refused) as refused:
                await recorder.record(auditor, CASELOADS, ["case-a"])
        finally:
            await recorder.close()
        assert (refused.value.status, refused.value.code) == (503, code)


@pytest.mark.parametrize(
    "days", ["²", "٣", "0", "36", "-1", "7.0", "x" * 100, "0" * 4300 + "7", "x" * 8000]
)
def test_a_bad_number_of_days_is_a_bad_query(days: str) -> None:
    """A superscript "²" passed str.isdigit and int() refused it: a ValueError past the
    view's handling, a 500 instead of a 400 naming the rule (and "٣" was read as 3). So did
    more than 4,300 digits, which int() refuses too. The refusal repeats 20 characters of the
    value at most (it repeated kilobytes)."""
    from services.caseload.web import BadQuery, _days

    with pytest.raises(BadQuery, match="days must be a whole number from 1 to 35") as refused:
        _days({"days": days})
    assert len(str(refused.value)) < 100
    assert _days({"days": "35"}) == 35
    assert _days({"days": "007"}) == 7


def test_a_date_that_is_no_date_is_repeated_20_characters_at_most() -> None:
    from datetime import date

    from services.caseload.web import BadQuery, _today

    with pytest.raises(BadQuery, match="today must be a date") as refused:
        _today({"today": "x" * 8000}, date(2030, 1, 1))
    assert len(str(refused.value)) < 100


@pytest.mark.parametrize("worker", ["", "w ana", "w-ana\n", "-w", "<b>", "w" * 65, "wörker"])
def test_a_worker_that_is_no_user_id_is_a_bad_query_not_repeated(worker: str) -> None:
    """The per-worker views once took any text as a worker (echoed in the contacts answer)."""
    from services.caseload.web import BadQuery, _worker

    with pytest.raises(BadQuery, match="worker must be a user id") as refused:
        _worker(worker)
    assert not worker or worker not in str(refused.value)
    assert _worker("w-ana.2:x_y") == "w-ana.2:x_y"


@pytest.mark.parametrize("today", ["0001-01-01", "1899-12-31", "2200-01-01", "9999-12-31"])
def test_a_day_beyond_the_services_bounds_is_a_bad_query(today: str) -> None:
    """The contacts view counts back from today: 0001-01-01 minus a day overflowed (a 500)."""
    from services.caseload.web import BadQuery, _today

    with pytest.raises(BadQuery, match="today must be between 1900-01-01 and 2199-12-31"):
        _today({"today": today}, date(2030, 1, 1))
    assert _today({"today": "1900-01-01"}, date(2030, 1, 1)).isoformat() == "1900-01-01"


def test_today_is_the_agencys_date_for_follow_ups() -> None:
    """Follow-up dates are the agency's calendar days, so an agency in UTC-8 at 17:00 is not yet
    on the next day UTC is on; the server's own local date (the old default) was neither."""
    from zoneinfo import ZoneInfo

    from services.caseload.settings import CaseloadSettings
    from services.caseload.web import _today

    zone = CaseloadSettings.from_env({"CASETRAIL_AGENCY_TIME_ZONE": "America/Los_Angeles"})
    assert zone.time_zone == ZoneInfo("America/Los_Angeles")
    assert CaseloadSettings.from_env({}).time_zone is UTC
    assert _today({}, date(2030, 1, 2)) == date(2030, 1, 2)


def test_a_worker_killed_hands_its_partitions_over_after_its_session_timeout() -> None:
    """Faust's 60 s default left a worker killed -9 holding its cases a minute."""
    from services.caseload.processor import build_app
    from services.caseload.settings import CaseloadSettings

    assert CaseloadSettings.from_env({}).session_timeout == 15
    settings = CaseloadSettings.from_env({"CASETRAIL_CASELOAD_SESSION_TIMEOUT": "8"})
    assert build_app(settings).conf.broker_session_timeout == 8
    # Faust refuses, when it builds the consumer, a session longer than its request timeout:
    # 91 to 1800 passed here and failed the worker's start.
    longest = build_app(CaseloadSettings.from_env({"CASETRAIL_CASELOAD_SESSION_TIMEOUT": "90"}))
    assert longest.conf.broker_session_timeout <= longest.conf.broker_request_timeout
    with pytest.raises(ValueError, match="CASETRAIL_CASELOAD_SESSION_TIMEOUT"):
        CaseloadSettings.from_env({"CASETRAIL_CASELOAD_SESSION_TIMEOUT": "91"})


@pytest.mark.parametrize("status", [200, 401, 403])
async def test_an_answer_routed_to_the_owning_process_keeps_the_answer_headers(
    tmp_path: Path, status: int
) -> None:
    """With several processes Faust routes a per-worker view to the owner of the worker's
    partition and hands back its status and body only: the routed answer (cases named, or a
    refusal) came without Cache-Control: no-store, nosniff and WWW-Authenticate."""
    from services.caseload.processor import build_app
    from services.caseload.settings import CaseloadSettings

    app = build_app(CaseloadSettings(data_dir=tmp_path / "caseload", web_port=free_port()))
    recovered(app)

    async def answered_elsewhere(table: str, key: str, web: Any, request: Any) -> Any:
        return web.text('{"case_ids": ["a"]}', content_type="application/json", status=status)

    app.router.route_req = answered_elsewhere  # type: ignore[method-assign,assignment]
    request = get_request(headers={}, query={}, match_info={"worker": "w-ana"})
    for path in ("/caseload/{worker}/", "/overdue/{worker}/", "/contacts/{worker}/"):
        response = await app.web.views[path].get(request, worker="w-ana")
        assert response.status == status
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers.get("WWW-Authenticate") == ("Bearer" if status == 401 else None)


@dataclass
class Served:
    """A caseload app's views over plain dict tables, audit's recording faked."""

    app: Any
    held: dict[str, Any]
    recorded: list[tuple[str, ...]]
    routed: list[str]


def served(tmp_path: Path, issuer: TestIssuer) -> Served:
    from faust.exceptions import SameNode

    from casetrail_platform.identity.settings import IssuerSettings
    from services.caseload.domain import UNASSIGNED, held_key
    from services.caseload.processor import build_app
    from services.caseload.settings import CaseloadSettings

    settings = CaseloadSettings(
        data_dir=tmp_path / "caseload",
        web_port=free_port(),
        issuer=IssuerSettings(issuer=issuer.url, audience=issuer.audience),
        audit_address="127.0.0.1:1",
    )
    app = build_app(settings)
    assigned((app, range(settings.partitions)))  # alone in its group
    held = {f"case-{n:04d}": {"follow_up_due": "2030-01-01"} for n in range(250)}
    app.held_cases = {
        held_key(worker, case_id): entry
        for worker in ("w-ana", UNASSIGNED)
        for case_id, entry in held.items()
    }
    it = Served(app, held, [], [])

    async def record(caller: Any, view: Any, case_ids: Any) -> None:
        it.recorded.append(tuple(case_ids))

    assert app.access_recorder is not None
    app.access_recorder.record = record  # type: ignore[method-assign]

    async def here(table: str, key: str, web: Any, request: Any) -> Any:
        it.routed.append(key)
        raise SameNode()

    app.router.route_req = here  # type: ignore[method-assign,assignment]
    return it


async def test_a_list_names_at_most_limit_cases_and_only_those_are_recorded(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    """The lists named every case they held in one answer (thousands of overdue follow-ups,
    recorded 100 per call to audit before the answer went out); now ``?limit=`` (1-1,000,
    default 100, as planning's ListCases) with ``truncated``, recording only the cases shown.
    Fails on the old code: every case named, no ``truncated``, ``limit`` ignored."""
    import json

    it = served(tmp_path, issuer)
    app, held, recorded = it.app, it.held, it.recorded
    recovered(app)
    token = bearer(issuer.mint("james.liu", "auditor"))
    every = sorted(held)
    cases = [
        ("/caseload/", {}, "unassigned", every[:100], True),
        ("/caseload/", {"limit": "1000"}, "unassigned", every, False),
        ("/caseload/{worker}/", {"limit": "7"}, "case_ids", every[:7], True),
        # Both hold every case here: oldest due first, then case id, then worker.
        ("/overdue/", {"today": "2030-02-01", "limit": "3"}, "overdue", every[:2], True),
        ("/overdue/{worker}/", {"today": "2030-02-01"}, "overdue", every[:100], True),
    ]
    for path, query, field, expected, truncated in cases:
        recorded.clear()
        request = get_request(headers=token, query=query, match_info={"worker": "w-ana"})
        worker = {"worker": "w-ana"} if "{worker}" in path else {}
        response = await app.web.views[path].get(request, **worker)
        body = json.loads(response.body)
        assert response.status == 200, (path, body)
        names = [o["case_id"] for o in body[field]] if field == "overdue" else body[field]
        if path == "/overdue/":
            expected = [every[0], every[0], every[1]]
        assert names == expected, path
        assert body["truncated"] is truncated, path
        assert [c for chunk in recorded for c in chunk] == names, path
    for bad in ("0", "1001", "²", "-1", "ten", "0" * 4300 + "1"):
        request = get_request(headers=token, query={"limit": bad}, match_info={})
        response = await app.web.views["/caseload/"].get(request)
        assert response.status == 400
        assert json.loads(response.body)["error"].startswith("limit must be a whole number")


async def test_no_view_answers_from_tables_still_being_recovered(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    """Faust restores the tables from their changelogs before the worker is ready; the views
    answered meanwhile with whatever part was back, as if it were all (and a per-worker view
    failed in Faust's router, a 500). Now 503 NOT_READY, nothing recorded. Fails on the old
    code: 200 with the tables as they were."""
    import json

    it = served(tmp_path, issuer)
    token = bearer(issuer.mint("james.liu", "auditor"))
    for path in ("/caseload/", "/caseload/{worker}/", "/overdue/", "/contacts/{worker}/"):
        request = get_request(headers=token, query={}, match_info={"worker": "w-ana"})
        worker = {"worker": "w-ana"} if "{worker}" in path else {}
        response = await it.app.web.views[path].get(request, **worker)
        assert response.status == 503, path
        assert json.loads(response.body)["reason"] == "NOT_READY", path
        assert response.headers["Cache-Control"] == "no-store"
    assert it.recorded == []
    assert it.routed == []  # answered here, not routed by a router that cannot route yet
    anonymous = get_request(headers={}, query={}, match_info={})
    assert (await it.app.web.views["/caseload/"].get(anonymous)).status == 401


async def test_a_certificate_bound_token_is_refused_and_nothing_is_recorded(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    """A token bound to a client certificate (cnf x5t#S256, RFC 8705) works at the services
    only on a call that comes with that certificate. The views asked for none and audit
    checked the binding against caseload's own client certificate, so a token bound to that
    one read every caseload for whoever sent it (review h-web). Now 401
    TOKEN_CERTIFICATE_MISMATCH, as the console refuses such a sign-in; audit is never asked.
    Fails on the old code: 200, the read recorded."""
    import json

    it = served(tmp_path, issuer)
    recovered(it.app)
    bound = issuer.mint("eve", "auditor", extra={"cnf": {"x5t#S256": "A" * 43}})
    refused = await refusal(CaseloadGate(issuer.verifier()), bearer(bound), {})
    assert (refused.status, refused.code) == (401, "TOKEN_CERTIFICATE_MISMATCH")
    request = get_request(headers=bearer(bound), query={}, match_info={"worker": "w-ana"})
    for path in ("/caseload/", "/caseload/{worker}/"):
        worker = {"worker": "w-ana"} if "{worker}" in path else {}
        response = await it.app.web.views[path].get(request, **worker)
        assert response.status == 401, path
        assert json.loads(response.body)["reason"] == "TOKEN_CERTIFICATE_MISMATCH", path
        assert response.headers["WWW-Authenticate"] == "Bearer", path
    assert it.recorded == []


async def _sent_to_the_views(tmp_path: Path, issuer: TestIssuer, request: bytes) -> bytes:
    """``request``'s bytes as they are, to the views of a caseload app over a real connection;
    the answer read until the server closes (the request says ``Connection: close``)."""
    import asyncio

    from casetrail_platform.identity.settings import IssuerSettings
    from services.caseload.processor import build_app
    from services.caseload.settings import CaseloadSettings

    port = free_port()
    app = build_app(
        CaseloadSettings(
            data_dir=tmp_path,
            web_port=port,
            issuer=IssuerSettings(issuer=issuer.url, audience=issuer.audience),
            audit_address="127.0.0.1:1",
        )
    )
    web: Any = app.web
    web.init_server()
    await web.start_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
        writer.close()
    finally:
        await web.stop_server()
    return answer


async def test_a_token_byte_that_is_not_utf8_is_refused_over_http_not_a_500(
    tmp_path: Path, issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp keeps a header byte that is not UTF-8 as a lone surrogate; in the token's
    payload PyJWT failed to encode it (UnicodeEncodeError): a bare 500 and a traceback logged
    (review h-web). Now 401 TOKEN_MALFORMED, by the verifier, over a real connection."""
    import json
    import logging

    header, payload, signature = issuer.mint("james.liu", "auditor").encode().split(b".")
    token = header + b"." + payload[:-1] + b"\xff." + signature
    answer = await _sent_to_the_views(
        tmp_path,
        issuer,
        b"GET /caseload/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token + b"\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 401 Unauthorized", answer[:200]
    assert json.loads(body)["reason"] == "TOKEN_MALFORMED"
    assert b"Cache-Control: no-store" in head
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("stray", [b"\r", b"\x01"], ids=["carriage-return", "control"])
async def test_a_header_the_views_cannot_read_is_logged_without_the_token_it_holds(
    tmp_path: Path, issuer: TestIssuer, caplog: pytest.LogCaptureFixture, stray: bytes
) -> None:
    """aiohttp refuses a header line holding a stray carriage return (a token file saved with
    CRLF line endings) or a control character 400, and logged its error at ERROR with the
    exception's words, which repeat the line whole: the caller's valid bearer token was in the
    processor's log. The server's log now tells the error's type and place only."""
    import logging

    token = issuer.mint("james.liu", "auditor")
    answer = await _sent_to_the_views(
        tmp_path,
        issuer,
        b"GET /caseload/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + f"Authorization: Bearer {token}".encode()
        + stray
        + b"\r\n\r\n",
    )
    assert answer.split(b"\r\n")[0].split()[1] == b"400", answer[:200]
    logged = [
        record.getMessage()
        + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    ]
    told = [text for text in logged if "Error handling request" in text]
    assert told, logged
    assert all("BadHttpMessage" in text for text in told), told
    assert not [text for text in logged if token in text]


async def test_a_forged_part_is_on_audits_record_whatever_the_callers_role(
    tmp_path: Path, audit: RunningAudit, issuer: TestIssuer
) -> None:
    """A part request no process asked for (X-Caseload-Forwarded on an all-worker view) was
    refused 403 PART_NOT_ASKED by recording the caller's read of the view naming no case, which
    audit records nothing of for an auditor, the role the views are for (review rev-web): the
    request made to read a part unrecorded, retried at will, left only a log line. Audit now
    records the processor's own refusal, rule part-not-asked under caseloads, for every role,
    and the view is refused in the processor's words."""
    import json

    from casetrail_platform.identity.settings import IssuerSettings
    from services.caseload.gathering import PartNotAsked
    from services.caseload.processor import build_app
    from services.caseload.settings import CaseloadSettings

    settings = CaseloadSettings(
        data_dir=tmp_path / "caseload",
        web_port=free_port(),
        issuer=IssuerSettings(issuer=issuer.url, audience=issuer.audience),
        audit_address=audit.address,
        audit_plaintext_allowed=True,
    )
    app = build_app(settings)
    assigned((app, range(settings.partitions)))
    app.held_cases = {}
    recovered(app)
    callers = (
        ("james.liu", "auditor", "/caseload/"),
        ("maria", "coordinator", "/overdue/"),
        ("mallory.k", "receptionist", "/caseload/"),
    )
    recorder = app.access_recorder
    assert recorder is not None
    try:
        for user, role, path in callers:
            forged = {**bearer(issuer.mint(user, role)), "X-Caseload-Forwarded": "1"}
            request = get_request(headers=forged, query={}, match_info={})
            response = await app.web.views[path].get(request)
            body = json.loads(response.body)
            assert (response.status, body) == (
                403,
                {"error": str(PartNotAsked()), "reason": "PART_NOT_ASKED"},
            ), role
    finally:
        await recorder.close()
    events = await audit.store.read_all(limit=10_000)
    assert not [e for e in events if isinstance(e.event, RecordAccessed)]
    assert [
        (e.case_id, e.accessor_id, e.action, e.rule, e.client_application)
        for e in (recorded.event for recorded in events)
        if isinstance(e, RecordAccessDenied)
    ] == [
        ("caseloads", user, Action.READ_CASELOADS.value, "part-not-asked", CLIENT_NAME)
        for user, _, _ in callers
    ]
