"""The home agency, whose staff the services serve, is one setting (``CASETRAIL_HOME_AGENCY``),
read where each process is composed and given to every access control, audit's accounting of
disclosures and coordination's agency file check. Before, it was the example agency's id
written into the policy: a deployment for another agency refused every one of its own staff,
and anyone whose token said ``eastbay-dss`` was its staff."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail.coordination.v1 import coordination_pb2, coordination_pb2_grpc
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail.planning.v1 import planning_pb2, planning_pb2_grpc
from casetrail_platform.identity.development import DevelopmentIssuer
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.keys.hosting import default_kek
from casetrail_platform.policy.home_agency import (
    DEFAULT_HOME_AGENCY,
    HOME_AGENCY_VARIABLE,
    home_agency,
)
from casetrail_platform.store.sqlite import SqliteEventStore
from cli import tail
from cli.main import main as cli_main
from cli.tail import TAIL_SUBJECT
from events.catalog.access import RecordAccessDenied
from events.catalog_registry import default_registry
from services import runner
from services.coordination.adapters.agency_file import FILE_NAME, AgencyConfigError
from services.coordination.adapters.example_agency import example_agency
from services.coordination.bootstrap import start as start_coordination
from services.runner import SERVICES, start_services, stop_services
from tests.support.grpc import refusal, unpacked
from tests.support.identity import TestIssuer

WEST = "westside-dss"

Read = Callable[[grpc.aio.Channel, tuple[tuple[str, str]]], Awaitable[Any]]


def _query(purpose: str) -> common_pb2.QueryContext:
    return common_pb2.QueryContext(purpose=purpose)


READS: dict[str, tuple[str, Read]] = {
    # service: the role that reads, and a read the policy decides on the caller's agency
    "coordination": (
        "coordinator",
        lambda channel, token: coordination_pb2_grpc.CoordinationServiceStub(channel).ListWorkers(
            coordination_pb2.ListWorkersRequest(context=_query("coordination")), metadata=token
        ),
    ),
    "planning": (
        "coordinator",
        lambda channel, token: planning_pb2_grpc.PlanningServiceStub(channel).ListCases(
            planning_pb2.ListCasesRequest(context=_query("coordination")), metadata=token
        ),
    ),
    "intake": (
        "supervisor",
        lambda channel, token: intake_pb2_grpc.IntakeServiceStub(channel).ListEmergencyAccesses(
            intake_pb2.ListEmergencyAccessesRequest(context=_query("supervision")), metadata=token
        ),
    ),
    "audit": (
        "auditor",
        lambda channel, token: audit_pb2_grpc.AuditServiceStub(channel).ListLedgerKeys(
            audit_pb2.ListLedgerKeysRequest(context=_query("confidentiality_review")),
            metadata=token,
        ),
    ),
}


def _agency_file(infra: Infrastructure, agency_id: str) -> Path:
    config = example_agency().model_dump(mode="json")
    config["agency_id"] = agency_id
    path = infra.service_dir("coordination") / FILE_NAME
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
async def west(tmp_path: Path, issuer: TestIssuer) -> AsyncIterator[dict[str, str]]:
    """The four services of a deployment for westside-dss (its agency file too)."""
    infra = replace(Infrastructure.embedded(tmp_path, verifier=issuer.verifier()), home_agency=WEST)
    _agency_file(infra, WEST)
    services = await start_services(infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0))
    try:
        yield {service.name: f"127.0.0.1:{service.port}" for service in services}
    finally:
        await stop_services(services)


def test_the_setting_keeps_the_rule_of_a_tokens_agency_claim() -> None:
    assert home_agency({}) == home_agency({HOME_AGENCY_VARIABLE: ""}) == DEFAULT_HOME_AGENCY
    assert home_agency({HOME_AGENCY_VARIABLE: "us-ca:westside_dss.2"}) == "us-ca:westside_dss.2"
    for wrong in ("west side", "-west", "a" * 65, "westside-dss\n", "wëst"):
        with pytest.raises(ValueError, match=HOME_AGENCY_VARIABLE):
            home_agency({HOME_AGENCY_VARIABLE: wrong})


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_serves_the_staff_of_the_home_agency_it_is_given(
    west: dict[str, str], issuer: TestIssuer, service: str
) -> None:
    role, read = READS[service]
    async with grpc.aio.insecure_channel(west[service]) as channel:
        # Its own staff are answered.
        await read(channel, bearer_metadata(issuer.mint(f"{role}-1", role, agency=WEST)))
        # The example agency's are another agency's here.
        token = bearer_metadata(issuer.mint(f"{role}-1", role, agency=DEFAULT_HOME_AGENCY))
        code, status = await refusal(read(channel, token))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    [info] = [d for d in unpacked(status) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "NO_RELATIONSHIP"


async def test_coordination_does_not_start_for_an_agency_file_of_another_agency(
    tmp_path: Path, issuer: TestIssuer
) -> None:
    """Its workers would be staff the policy refuses, and the home agency's tokens would act
    on its cases. Refused before anything is opened, naming both ids; without an agency file,
    the built-in example agency is eastbay-dss's."""
    infra = replace(Infrastructure.embedded(tmp_path, verifier=issuer.verifier()), home_agency=WEST)
    with pytest.raises(AgencyConfigError) as refused:
        await start_coordination(infra)
    assert "the built-in example agency" in str(refused.value)
    assert f"{DEFAULT_HOME_AGENCY!r} is not the home agency {WEST!r}" in str(refused.value)
    path = _agency_file(infra, "northside-dss")
    with pytest.raises(AgencyConfigError) as refused:
        await start_coordination(infra)
    assert str(refused.value) == (
        f"{path}: agency_id 'northside-dss' is not the home agency {WEST!r}"
        f" ({HOME_AGENCY_VARIABLE}); the two must name the same agency"
    )
    assert not (tmp_path / "coordination" / "events.db").exists()


def test_the_runner_reads_the_home_agency_where_it_composes_the_services(
    tmp_path: Path, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value no token could name ends the start in one line; a good one reaches the
    services (coordination, without an agency file of that agency, does not start)."""
    monkeypatch.setattr(runner, "configure_logging", lambda: None)  # pytest's own handlers stay
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    argv = ["--service", "coordination", "--any-port", "--metrics-address", "off"]
    argv += ["--data-dir", str(tmp_path)]
    monkeypatch.setenv(HOME_AGENCY_VARIABLE, "west side")
    with pytest.raises(SystemExit) as ended:
        runner.main(argv)
    assert str(ended.value).startswith(f"{HOME_AGENCY_VARIABLE} 'west side' must be")
    monkeypatch.setenv(HOME_AGENCY_VARIABLE, WEST)
    with pytest.raises(AgencyConfigError, match=f"is not the home agency {WEST!r}"):
        runner.main(argv)


def test_the_tail_follows_the_stores_for_the_home_agencys_auditor_only(
    tmp_path: Path,
    issuer: TestIssuer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``casetrail tail`` decides as the services do: for a deployment of westside-dss, the
    example agency's auditor is refused, on the record of the store it asked for."""
    asyncio.run(_intake_store(tmp_path))
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(HOME_AGENCY_VARIABLE, WEST)

    async def followed(*_: object) -> None:
        """Allowed: ends at once instead of following the stores."""

    monkeypatch.setattr(tail, "_tail_all", followed)
    argv = ["tail", "--service", "intake", "--data-dir", str(tmp_path)]
    statuses = {}
    for agency in (DEFAULT_HOME_AGENCY, WEST):
        monkeypatch.setenv("CASETRAIL_TOKEN", issuer.mint("kim", "auditor", agency=agency))
        with pytest.raises(SystemExit) as ended:
            cli_main(argv)
        statuses[agency] = ended.value.code
    assert statuses == {DEFAULT_HOME_AGENCY: 1, WEST: 0}
    assert "refused: no-relationship" in capsys.readouterr().err
    denied = asyncio.run(_denied_in_intake(tmp_path))
    assert [(d.accessor_agency_id, d.case_id, d.rule) for d in denied] == [
        (DEFAULT_HOME_AGENCY, TAIL_SUBJECT, "no-relationship")
    ]


async def _intake_store(data_dir: Path) -> None:
    """Intake's store as its start leaves it: with the agency's KEK, which a tail reads with."""
    default_kek(data_dir).check()
    store = await SqliteEventStore.open(data_dir / "intake" / "events.db", default_registry())
    await store.close()


async def _denied_in_intake(data_dir: Path) -> list[RecordAccessDenied]:
    store = await SqliteEventStore.open(data_dir / "intake" / "events.db", default_registry())
    try:
        recorded = await store.read_all(0)
    finally:
        await store.close()
    return [r.event for r in recorded if isinstance(r.event, RecordAccessDenied)]


def test_a_development_login_is_for_the_home_agency_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``casetrail token`` / ``login`` mint for the agency the services serve: the example
    agency's token was refused by every service of another agency's ``make run``."""
    DevelopmentIssuer(tmp_path, port=0).stop()
    monkeypatch.setenv(HOME_AGENCY_VARIABLE, WEST)
    argv = ["token", "--user", "kim", "--role", "auditor", "--data-dir", str(tmp_path)]
    agencies = []
    for extra in ([], ["--agency", "northside-dss"]):
        with pytest.raises(SystemExit) as ended:
            cli_main([*argv, *extra])
        assert ended.value.code == 0
        token = capsys.readouterr().out.strip()
        agencies.append(jwt.decode(token, options={"verify_signature": False})["agency"])
    assert agencies == [WEST, "northside-dss"]
