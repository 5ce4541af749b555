"""`casetrail` as an operator or auditor runs it: a separate process against the services."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from casetrail.audit.v1 import audit_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail_platform.identity.tls import ALLOW_PLAINTEXT
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.keys.sqlite import KEYS_FILE_NAME
from casetrail_platform.ledger.export import PROOF_ATTRIBUTE
from casetrail_platform.policy.guard import access_stream
from cli.rpc import Connection, connect, eventually, query
from cli.tail import TAIL_CLIENT, TAIL_SUBJECT
from cli.walk.story import AUDITOR, RECEPTIONIST
from events.catalog_registry import default_registry
from events.cloudevents import from_json_lines
from services.demo import LocalCasetrail, embedded_services
from services.runner import SERVICES
from tests.e2e.conftest import Casetrail
from tests.e2e.support import casetrail_cli, new_case
from tests.support.cases import registration
from tests.support.distributed import ENV, REPO

pytestmark = pytest.mark.asyncio(loop_scope="package")

ACCESSED = "casetrail.record.accessed"
SIGN_EVERY = Infrastructure(data_dir=Path()).ledger_sign_every


async def test_an_auditor_reads_timeline_state_and_export(casetrail: Casetrail) -> None:
    case = await new_case(casetrail, "home_care")
    audit = ["--audit", casetrail.addresses["audit"], "--token", casetrail.tokens(AUDITOR)]
    known = audit_pb2.GetTimelineRequest(
        context=query("confidentiality_review"), case_id=case.case_id
    )
    await eventually(
        lambda: casetrail.stubs.as_(AUDITOR).audit.GetTimeline(known),
        lambda page: (
            {e.event_type for e in page.entries}
            >= {"casetrail.case.opened", "casetrail.client.registered"}
        ),
        what="audit to learn the case and its client",
        patience=casetrail.patience,
    )

    status, out, err = await casetrail_cli("timeline", case.case_id, "--json", *audit)
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert "casetrail.case.opened" in [event["type"] for event in events]
    # The case's events and its client's own (the registration: the client is its subject).
    assert {event["subject"] for event in events if event["source"] != "casetrail/audit"} == {
        case.case_id,
        case.client_id,
    }

    now = datetime.now(UTC).isoformat()
    status, out, err = await casetrail_cli("state", case.case_id, "--as-of", now, "--json", *audit)
    assert status == 0, err
    state = json.loads(out)
    assert (state["case_id"], state["status"]) == (case.case_id, "CASE_STATUS_OPENED")
    status, out, err = await casetrail_cli("state", case.case_id, "--as-of", now, *audit)
    assert status == 0, err
    assert "  client born 1950-03-14; holds none" in out.splitlines()
    # Without --as-of: audit's own now, named (this machine's clock may run ahead of audit's).
    status, out, err = await casetrail_cli("state", case.case_id, *audit)
    assert status == 0, err
    assert out.startswith(f"as it was at {datetime.now(UTC):%Y-%m-%d}"), out

    status, out, err = await casetrail_cli("export", case.case_id, *audit)
    assert status == 0, err
    exported = from_json_lines(out, default_registry())
    assert "casetrail.case.opened" in [recorded.event.event_type for recorded in exported]

    status, _, err = await casetrail_cli("timeline", case.case_id, *audit, "--purpose", "gossip")
    assert status == 1
    assert "INVALID_ARGUMENT" in err
    assert "context.purpose" in err


async def test_an_operator_rebuilds_a_projection(tmp_path: Path) -> None:
    storage = ["--data-dir", str(tmp_path)]
    async with embedded_services(tmp_path) as local:
        await _one_case(local)
        # Beside the running service it would answer from a half-built directory: refused.
        status, out, err = await casetrail_cli("rebuild", "intake", "client-directory", *storage)
        assert (status, out) == (2, "")  # errors on standard error, not into a pipe's reader
        assert "intake is running" in err

    status, out, err = await casetrail_cli("rebuild", "intake", "client-directory", *storage)
    assert status == 0, err
    assert "rebuilt up to position" in out
    # By the name the projection goes by (renamed to be rebuilt), and the review queue too.
    for name in ("intake.client-directory-v6", "emergency-accesses"):
        status, out, err = await casetrail_cli("rebuild", "intake", name, *storage)
        assert status == 0, err
        assert "rebuilt up to position" in out
    status, out, err = await casetrail_cli("rebuild", "planning", "case-view-v7", *storage)
    assert (status, out) == (2, "")
    assert "fed from the bus" in err


async def test_only_an_auditor_tails_a_store_and_every_case_shown_is_recorded(
    tmp_path: Path,
) -> None:
    storage = ["--data-dir", str(tmp_path)]
    async with embedded_services(tmp_path) as local:
        case_id = await _one_case(local)
        # Anyone else is refused, and the refusal recorded in each store asked for.
        status, out, err = await casetrail_cli(
            "tail", "--service", "intake", "--service", "planning", *storage,
            "--token", local.tokens(RECEPTIONIST),
        )  # fmt: skip
        assert (status, out) == (1, "")
        assert "refused: role-not-allowed" in err
        status, _, err = await casetrail_cli(
            "tail", "--service", "intake", *storage, "--token", "not-a-token"
        )
        assert status == 1
        assert "refused" in err

        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "tail", "--service", "intake", "--from-start",
            *storage, "--token", local.tokens(AUDITOR),
            cwd=REPO, env=ENV, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tail.stdout is not None
        try:
            lines = [json.loads(await tail.stdout.readline()) for _ in range(2)]
        finally:
            tail.terminate()
            await tail.wait()
        assert [line["type"] for line in lines] == [
            "casetrail.client.registered",
            "casetrail.case.opened",
        ]
        # The tail recorded what it showed in intake's store, which publishes it to audit.
        async with connect(local.addresses, local.tokens) as connection:
            log = await eventually(
                lambda: connection.as_(AUDITOR).audit.GetAccessLog(
                    audit_pb2.GetAccessLogRequest(
                        context=query("confidentiality_review"),
                        case_id=case_id,
                        page_size=1000,
                    )
                ),
                lambda answer: any(r.client_application == TAIL_CLIENT for r in answer.records),
                what="audit to learn of the tail's access",
                patience=30.0,
            )
        (access,) = [r for r in log.records if r.client_application == TAIL_CLIENT]
        assert access.source == "casetrail/intake"  # the service's own event, proven by its log
        assert (access.accessor.user_id, access.rule) == (AUDITOR.user_id, "auditor-review")
        assert "assessment" in access.sections

    from casetrail_platform.store.sqlite import SqliteEventStore

    for service in ("intake", "planning"):
        store = await SqliteEventStore.open(tmp_path / service / "events.db", default_registry())
        try:
            refusals = await store.read_stream(access_stream(TAIL_SUBJECT))
        finally:
            await store.close()
        assert [r.metadata.actor.user_id for r in refusals] == [RECEPTIONIST.user_id], service


async def _one_case(local: LocalCasetrail) -> str:
    async with connect(local.addresses, local.tokens) as connection:
        stubs = connection.as_(RECEPTIONIST)
        client = await stubs.intake.RegisterClient(registration())
        opened = await stubs.intake.OpenCase(
            intake_pb2.OpenCaseRequest(
                context=registration().context,
                client_id=client.client_id,
                referral_source=intake_pb2.ReferralSource(kind="family"),
                presenting_needs=[intake_pb2.PresentingNeed(category="food")],
            )
        )
        case_id: str = opened.result.case_id
        return case_id


async def test_an_operator_lists_parked_records_and_asks_for_a_retry(tmp_path: Path) -> None:
    from casetrail_platform.parking import ParkedRecord
    from casetrail_platform.store.sqlite import SqliteEventStore
    from casetrail_platform.store.sqlite_parking import SqliteParkingLot

    store = await SqliteEventStore.open(tmp_path / "intake" / "events.db", default_registry())
    storage = ["--data-dir", str(tmp_path)]
    status, out, err = await casetrail_cli("parked", "list", "intake", *storage)
    assert (status, out) == (0, "0 parked records\n"), err  # the count line alone
    try:
        await SqliteParkingLot(store).park(
            [
                ParkedRecord(
                    relay="intake-outbox",
                    position=position,
                    event_id=uuid4(),
                    key="case-1",
                    stream="case-case-1",
                    sequence=position,
                    event_type="casetrail.case.opened",
                    reason=reason,
                    parked_at=datetime.now(UTC),
                )
                for position, reason in (
                    (4, "refused by the bus: MessageSizeTooLargeError"),
                    (5, "held: position 4 of this case is parked"),
                )
            ]
        )
    finally:
        await store.close()

    status, out, err = await casetrail_cli("parked", "list", "intake", *storage)
    assert status == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["4", "5", "2 parked records"]
    assert "MessageSizeTooLargeError" in out
    status, out, err = await casetrail_cli(
        "parked", "retry", "intake", "--case", "case-1", *storage
    )
    assert status == 0, err
    assert "retry requested for 2 parked records" in out
    status, out, _ = await casetrail_cli("parked", "list", "intake", *storage)
    assert out.count("(retry requested)") == 2


async def test_make_run_then_make_demo_and_an_auditor_logged_in(tmp_path: Path) -> None:
    """The README's commands: the embedded default with its development issuer, the demo
    walking through it with tokens that issuer signs, and `casetrail login` for the CLI."""
    async with _serving(tmp_path) as printed:
        assert "development token issuer (DEVELOPMENT ONLY) http://127.0.0.1:" in printed
        assert "  console       http://127.0.0.1:" in printed
        key = tmp_path / "identity" / "DEVELOPMENT-ONLY-signing-key.pem"
        assert key.stat().st_mode & 0o077 == 0

        demo = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.demo", "--data-dir", str(tmp_path),
            cwd=REPO, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        walked, complaints = await demo.communicate()
        assert demo.returncode == 0, complaints.decode()[-2000:]
        assert "Who did what (audit)" in walked.decode()

        storage = ["--data-dir", str(tmp_path)]
        status, _, err = await casetrail_cli("timeline", "no-such-case", *storage)
        assert status != 0
        assert "no token" in err
        status, out, err = await casetrail_cli(
            "login", "--user", "james.liu", "--role", "auditor", *storage
        )
        assert status == 0, err
        assert "logged in as james.liu (auditor)" in out
        status, _, err = await casetrail_cli("timeline", "no-such-case", *storage)
        assert status == 1
        assert "NOT_FOUND" in err  # authenticated: the case just does not exist
        status, _, err = await casetrail_cli(
            "timeline", "no-such-case", *storage, "--token", "not-a-jwt"
        )
        assert "UNAUTHENTICATED" in err
        await _console_answers(storage)


@asynccontextmanager
async def _serving(data_dir: Path, *options: str, env: dict[str, str] = ENV) -> AsyncIterator[str]:
    """`casetrail serve --any-port` on ``data_dir`` (and ``options``), once it printed its
    addresses and the development issuer's (what it printed), stopped at the end."""
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "serve", "--any-port", "--data-dir", str(data_dir),
        *options,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert serve.stdout is not None
    try:
        printed = ""
        async with asyncio.timeout(60):
            while "casetrail login" not in printed:
                printed += (await serve.stdout.readline()).decode()
        yield printed
    finally:
        serve.terminate()
        await serve.wait()


async def test_served_on_every_address_the_cli_dials_loopback(tmp_path: Path) -> None:
    """`serve --host 0.0.0.0` wrote 0.0.0.0 into addresses.json: every `casetrail` command
    then dialled a host beyond loopback in plain text and was refused without
    CASETRAIL_GRPC_ALLOW_PLAINTEXT. The file holds the address a client here dials."""
    serving_env = ENV | {ALLOW_PLAINTEXT: "1"}  # the server's choice, not the CLI's
    cli_env = {name: value for name, value in ENV.items() if name != ALLOW_PLAINTEXT}
    async with _serving(tmp_path, "--host", "0.0.0.0", env=serving_env) as printed:
        assert "listening on every address of this machine (--host '0.0.0.0')" in printed
        addresses = json.loads((tmp_path / "addresses.json").read_text())
        assert sorted(addresses) == sorted(SERVICES)
        assert all(address.startswith("127.0.0.1:") for address in addresses.values())
        storage = ["--data-dir", str(tmp_path)]
        for argv in (("login", "--user", "james.liu", "--role", "auditor"), ("timeline", "x")):
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", *argv, *storage,
                cwd=REPO, env=cli_env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await done.communicate()
            if argv[0] == "timeline":  # dialled and answered: the case does not exist
                assert (done.returncode, "NOT_FOUND" in err.decode()) == (1, True), err
            else:
                assert done.returncode == 0, err


async def _console_answers(storage: list[str]) -> None:
    """`casetrail console` alone, against the audit `make run` started: its sign-in page."""
    console = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "console", "--port", "0", *storage,
        cwd=REPO, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert console.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await console.stdout.readline()).decode()
        url = line.split(" on ", 1)[1].split()[0]
        page = await asyncio.to_thread(urllib.request.urlopen, url + "/signin", timeout=10)
        assert "Development sign-in (DEVELOPMENT ONLY)" in page.read().decode()
        assert "default-src 'none'" in page.headers["content-security-policy"]
    finally:
        console.terminate()
        await console.wait()


async def test_a_case_the_tail_showed_still_exports_verifiably(tmp_path: Path) -> None:
    """The tail records its reads in the tailed service's store (its ledger, its access
    streams): the export of a case it showed proves those records in that service's log."""
    storage = ["--data-dir", str(tmp_path)]
    async with embedded_services(tmp_path) as local:
        case_id = await _one_case(local)
        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "tail", "--service", "intake", "--from-start",
            *storage, "--token", local.tokens(AUDITOR),
            cwd=REPO, env=ENV, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tail.stdout is not None
        try:
            [json.loads(await tail.stdout.readline()) for _ in range(2)]
        finally:
            tail.terminate()
            await tail.wait()
        async with connect(local.addresses, local.tokens) as connection:
            audit = connection.as_(AUDITOR).audit
            # Intake reads the case after the tail: its access stream holds both recorders'.
            await _intake_reads(connection, case_id)
            request = audit_pb2.ExportCaseRequest(
                context=query("confidentiality_review"), case_id=case_id
            )
            tries: list[None] = []

            async def exported() -> list[dict[str, object]]:
                if tries:  # each export records an access: spaced out past a checkpoint
                    await asyncio.sleep(2.5 * SIGN_EVERY)
                tries.append(None)
                text = b"".join([c.json_lines async for c in audit.ExportCase(request)])
                return [json.loads(line) for line in text.split(b"\n") if line]

            lines = await eventually(
                exported,
                lambda lines: (
                    sum(line["type"] == ACCESSED for line in lines) >= 2
                    and all(PROOF_ATTRIBUTE in line for line in lines)
                ),
                what="the tail's and intake's accesses exported with their proofs",
                patience=60.0,
            )
            keys = await audit.ListLedgerKeys(
                audit_pb2.ListLedgerKeysRequest(context=query("confidentiality_review"))
            )
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("".join(key.verifier_key + "\n" for key in keys.keys))
    export = tmp_path / "case.jsonl"
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))
    status, out, err = await casetrail_cli("verify", str(export), "--keys", str(keys_file))
    assert status == 0, err
    assert f"{len(lines)} of {len(lines)} events verified" in out


async def _intake_reads(connection: Connection, case_id: str) -> None:
    await connection.as_(AUDITOR).intake.GetCase(
        intake_pb2.GetCaseRequest(context=query("confidentiality_review"), case_id=case_id)
    )


async def test_verify_names_the_line_of_a_hostile_export_and_never_crashes(
    tmp_path: Path,
) -> None:
    """Exports an auditor may be handed: each fails with its line named, in bounded memory
    (the file is read a line at a time), never with a traceback; an unreadable file is a bad
    argument (exit 2). Output to a reader gone early ends quietly."""
    async with embedded_services(tmp_path / "data") as local:
        cases = [await _one_case(local), await _one_case(local)]
        async with connect(local.addresses, local.tokens) as connection:
            audit = connection.as_(AUDITOR).audit
            exports = [await _proven_export(audit, case_id) for case_id in cases]
            keys = await audit.ListLedgerKeys(
                audit_pb2.ListLedgerKeysRequest(context=query("confidentiality_review"))
            )
        keys_file = tmp_path / "keys.txt"
        keys_file.write_text("".join(key.verifier_key + "\n" for key in keys.keys))
        # A reader gone before the first line (`| head`): quiet, exit 141 as after SIGPIPE.
        token = local.tokens(AUDITOR)
        for argv in (
            ("timeline", cases[0], "--audit", local.addresses["audit"]),
            ("tail", "--from-start", "--data-dir", str(tmp_path / "data")),
        ):
            status, err = await asyncio.to_thread(_to_a_closed_pipe, *argv, token=token)
            assert (status, err) == (141, ""), argv

    lines, other = exports
    case_opened = next(n for n, line in enumerate(lines) if line["type"] == "casetrail.case.opened")
    proven = json.loads(lines[case_opened][PROOF_ATTRIBUTE])
    note = lines[case_opened]["ledgercheckpoint"]
    body, signatures = note.split("\n\n")
    hostile: dict[str, tuple[bytes, str]] = {
        "empty": (b"", "the export holds no events"),
        "truncated": (_jsonl(lines)[:-20], f"line {len(lines)}: not valid JSON"),
        "not UTF-8": (_jsonl(lines) + b"\xff\xfe{}\n", f"line {len(lines) + 1}: not UTF-8"),
        "not an object": (_jsonl(lines) + b"[1, 2]\n", f"line {len(lines) + 1}: not a JSON object"),
        "nested": (_jsonl(lines) + b"[" * 100_000 + b"\n", f"line {len(lines) + 1}: not valid"),
        "long number": (_jsonl(lines) + b"9" * 5000 + b"\n", f"line {len(lines) + 1}: not valid"),
        "duplicate key": (
            _jsonl(lines).replace(
                b'"subject":', b'"subject":"%s","subject":' % cases[1].encode(), 1
            ),
            "line 1: not valid JSON (key 'subject' appears twice)",
        ),
        "proof too long": (
            _jsonl(lines, case_opened, {PROOF_ATTRIBUTE: proven | {"proof": proven["proof"] * 2}}),
            f"line {case_opened + 1}: event",
        ),
        "tree size overflows": (
            _jsonl(lines, case_opened, {PROOF_ATTRIBUTE: proven | {"treesize": float("inf")}}),
            f"line {case_opened + 1}: event {lines[case_opened]['id']}: ledgerproof is malformed",
        ),
        "note with an extra line": (
            _jsonl(lines, case_opened, {"ledgercheckpoint": f"{body}\nextra\n\n{signatures}"}),
            f"line {case_opened + 1}: event {lines[case_opened]['id']}: checkpoint of",
        ),
        "note not UTF-8": (
            # JSON's "\ud800": a lone surrogate, no UTF-8 text (Go's note.Open refuses it too).
            _jsonl(lines, case_opened, {"ledgercheckpoint": f"{body}\n\ud800\n\n{signatures}"}),
            f"line {case_opened + 1}: event {lines[case_opened]['id']}: checkpoint of",
        ),
        "many short bad lines": (b"x\n" * 5000, "line 1000: not valid JSON"),
        "bad signature": (
            _jsonl(lines, case_opened, {"ledgercheckpoint": f"{body}\n\n{_flipped(signatures)}"}),
            f"line {case_opened + 1}: event {lines[case_opened]['id']}: checkpoint of",
        ),
        "another case mixed in": (
            _jsonl(lines) + _jsonl(other),
            f"is of case {cases[1]}, but the export is of case {cases[0]}",
        ),
        "another client's trail mixed in": (
            _jsonl(lines)
            + _jsonl([line for line in other if line["stream"].startswith("client-")]),
            ", but the case was opened for client ",
        ),
    }
    for name, (content, verdict) in hostile.items():
        path = tmp_path / "hostile.jsonl"
        path.write_bytes(content)
        status, out, err = await casetrail_cli("verify", str(path), "--keys", str(keys_file))
        assert status == 1, (name, out, err)
        assert verdict in err, (name, err)
        assert "Traceback" not in err, name

    path.write_bytes(b"x\n" * 5000)  # one problem kept per line would grow without bound
    status, _, err = await casetrail_cli("verify", str(path), "--keys", str(keys_file))
    assert "line 1000: not valid JSON" in err
    assert "line 1001" not in err
    # The 4,000 lines past those told, and the statement of the extent it does not carry.
    assert "and 4001 more problems" in err

    # A line of 100 MB: named, and never held in memory whole (nor the file).
    path = tmp_path / "hostile.jsonl"
    with path.open("wb") as file:
        file.write(_jsonl(lines) + b'"')
        for _ in range(100):
            file.write(b"a" * 1_000_000)
        file.write(b'"\n')
    status, err, peak_kib = await asyncio.to_thread(
        _peak_memory, "verify", str(path), "--keys", str(keys_file)
    )
    assert status == 1
    assert f"line {len(lines) + 1}: longer than" in err
    # The interpreter and its imports take about 80 MB; reading the file whole took 300.
    assert peak_kib < 150_000, peak_kib

    for unreadable in (tmp_path / "missing.jsonl", tmp_path):
        status, _, err = await casetrail_cli("verify", str(unreadable), "--keys", str(keys_file))
        assert status == 2
        assert f"{unreadable}: cannot read the export" in err
        assert "Traceback" not in err
    path.write_bytes(_jsonl(lines))
    status, err = await asyncio.to_thread(
        _to_a_closed_pipe, "verify", str(path), "--keys", str(keys_file)
    )
    assert (status, err) == (141, "")


async def _proven_export(audit: Any, case_id: str) -> list[dict[str, Any]]:
    """The case's export once every line carries its proof (none pending a checkpoint)."""
    request = audit_pb2.ExportCaseRequest(context=query("confidentiality_review"), case_id=case_id)
    tries: list[None] = []

    async def exported() -> list[dict[str, Any]]:
        if tries:
            await asyncio.sleep(SIGN_EVERY)
        tries.append(None)
        text = b"".join([c.json_lines async for c in audit.ExportCase(request)])
        return [json.loads(line) for line in text.split(b"\n") if line]

    return await eventually(
        exported,
        lambda lines: len(lines) >= 3 and all(PROOF_ATTRIBUTE in line for line in lines),
        what="the export with every line proven",
        patience=60.0,
    )


def _jsonl(
    lines: list[dict[str, Any]], number: int = -1, changes: dict[str, Any] | None = None
) -> bytes:
    """The export's lines, line ``number`` (from 0) with ``changes`` (a proof re-encoded)."""
    out = []
    for index, line in enumerate(lines):
        if index == number and changes:
            line = line | {
                key: json.dumps(value) if isinstance(value, dict) else value
                for key, value in changes.items()
            }
        out.append(json.dumps(line, separators=(",", ":")) + "\n")
    return "".join(out).encode()


def _flipped(signatures: str) -> str:
    """A signature line with one character of its signature changed (its key id kept)."""
    at = len(signatures) - 10
    return signatures[:at] + ("B" if signatures[at] == "A" else "A") + signatures[at + 1 :]


def _to_a_closed_pipe(*arguments: str, token: str = "") -> tuple[int, str]:
    """The command's status and standard error, its standard output a pipe no one reads;
    ``token`` in CASETRAIL_TOKEN (``--token`` would add its warning to standard error)."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *arguments],
            cwd=REPO, env={**ENV, "CASETRAIL_TOKEN": token}, stdout=write,
            stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    return done.returncode, done.stderr.decode()


def _peak_memory(*arguments: str) -> tuple[int, str, int]:
    """The command's status, standard error and peak resident memory (KiB: its VmHWM, read
    while it runs; a child's ru_maxrss counts this process's memory it was forked from)."""
    peak = 0
    with subprocess.Popen(
        [sys.executable, "-m", "cli.main", *arguments],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        status_file = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            with contextlib.suppress(OSError):
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            time.sleep(0.01)
        assert process.stderr is not None
        err = process.stderr.read().decode()
    return process.returncode, err, peak


async def test_operator_tools_name_what_they_cannot_reach_or_write(tmp_path: Path) -> None:
    """A database, Kafka or file the command needs: one line naming it, never a traceback
    (the operator tools open storage directly, so its errors reached the terminal raw)."""
    down = ["--backend", "distributed", "--pg-dsn", "postgresql://postgres@127.0.0.1:1/casetrail"]
    (tmp_path / "addresses.json").mkdir()
    keys_dir = tmp_path / "with-keys"  # a data-key table, as `make run` leaves one
    (keys_dir / "keys").mkdir(parents=True)
    (keys_dir / "keys" / KEYS_FILE_NAME).touch()
    expected = {
        ("parked", "list", "intake", *down): (1, "casetrail parked: the intake_events event"),
        ("verify-store", "intake", *down): (1, "casetrail verify-store: the intake_events"),
        ("parked", "retry", "intake", "--case", "x" * 1000, *down): (
            2,
            "argument --case: not an id",
        ),
        ("dlq", "list", "--bootstrap", "127.0.0.1:1"): (1, "casetrail dlq: Kafka is unreachable"),
        ("dlq", "list", "a group!", "--bootstrap", "127.0.0.1:1"): (
            2,
            "argument group: a consumer group is 1-245 characters",
        ),
        ("keys", "new-kek", "/proc/no/kek.bin"): (2, "/proc/no/kek.bin: cannot write the KEK"),
        ("keys", "status", "--kek-file", str(tmp_path), "--data-dir", str(keys_dir)): (
            2,
            f"--kek-file {tmp_path}: not a KEK file",
        ),
        ("serve", "--any-port", "--data-dir", "/proc/no"): (2, "--data-dir /proc/no: cannot"),
        ("serve", "--any-port", "--host", "256.0.0.1", "--data-dir", str(tmp_path / "s")): (
            2,
            "--host: gRPC on 256.0.0.1 without TLS would carry bearer tokens in plain text",
        ),
        ("keys", "rotate-kek", "--batch-size", str(10**20)): (
            2,
            "--batch-size: must be a whole number from 1",
        ),
        ("timeline", "case-1", "--token", "t", "--data-dir", str(tmp_path)): (
            2,
            f"{tmp_path / 'addresses.json'}: cannot read the services' addresses",
        ),
    }
    for argv, (code, said) in expected.items():
        status, _, err = await casetrail_cli(*argv)
        assert (status, "Traceback" in err) == (code, False), (argv, err)
        assert said in err, (argv, err)
        assert "Unclosed" not in err, (argv, err)  # a Kafka client that failed to start
