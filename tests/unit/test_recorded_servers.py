"""The tests' servers are this checkout's (h-tidy2): `make servers-start` records what it
started in var/servers.env and the tests connect to that unless the environment names others.
Before, without CASETRAIL_PG_DSN / CASETRAIL_KAFKA_BOOTSTRAP they used the default ports, those
of another checkout's servers or CI's, which a test could wipe."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench import store_bench
from infra import servers as resolution
from tests.support import servers

RECORD_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "record-server.sh"


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout's record (not this one's), and an environment naming no server."""
    for name in resolution.SERVER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "var" / "servers.env"
    monkeypatch.setattr(resolution, "RECORDED_SERVERS", path)
    return path


def _record(checkout: Path, name: str, value: str) -> None:
    """infra/record-server.sh as `make servers-start` runs it, copied into ``checkout`` with
    the servers' common.sh, which resolve their settings."""
    infra = checkout / "infra"
    for server in ("postgres", "kafka"):
        (infra / server).mkdir(parents=True, exist_ok=True)
        shutil.copy(RECORD_SCRIPT.parent / server / "common.sh", infra / server / "common.sh")
    shutil.copy(RECORD_SCRIPT, infra / "record-server.sh")
    subprocess.run([str(infra / "record-server.sh"), name, value], check=True, timeout=30)


def test_without_a_record_or_the_environment_a_server_test_fails_in_ci_saying_what_to_run(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASETRAIL_REQUIRE_SERVERS", "1")
    for setting in (servers.postgres_dsn, servers.kafka_bootstrap):
        with pytest.raises(pytest.fail.Exception, match="run `make servers-start`"):
            setting()


def test_without_a_record_or_the_environment_a_server_test_skips_on_a_developer_machine(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CASETRAIL_REQUIRE_SERVERS", raising=False)
    for setting in (servers.postgres_dsn, servers.kafka_bootstrap):
        with pytest.raises(pytest.skip.Exception, match="run `make servers-start`"):
            setting()


def test_the_servers_recorded_by_servers_start_are_the_tests_defaults(
    record: Path, tmp_path: Path
) -> None:
    _record(tmp_path, "CASETRAIL_PG_DSN", "postgresql://postgres@127.0.0.1:1/old")
    _record(tmp_path, "CASETRAIL_KAFKA_BOOTSTRAP", "127.0.0.1:19430")
    _record(tmp_path, "CASETRAIL_PG_DSN", "postgresql://postgres@127.0.0.1:15690/casetrail")
    assert servers.postgres_dsn() == "postgresql://postgres@127.0.0.1:15690/casetrail"
    assert servers.kafka_bootstrap() == "127.0.0.1:19430"
    env = {"CASETRAIL_KAFKA_BOOTSTRAP": "kafka:9092"}
    resolution.use_recorded_servers(env)
    assert env == {
        "CASETRAIL_KAFKA_BOOTSTRAP": "kafka:9092",
        "CASETRAIL_PG_DSN": "postgresql://postgres@127.0.0.1:15690/casetrail",
    }


def test_the_environment_names_other_servers(
    record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(tmp_path, "CASETRAIL_PG_DSN", "postgresql://postgres@127.0.0.1:15690/casetrail")
    monkeypatch.setenv("CASETRAIL_PG_DSN", "postgresql://postgres@db:5432/casetrail")
    assert servers.postgres_dsn() == "postgresql://postgres@db:5432/casetrail"


def test_without_a_record_or_the_environment_a_benchmark_stops_saying_what_to_run(
    record: Path,
) -> None:
    """The benchmarks resolve their servers as the tests do (infra/servers.py), and stop with
    one line before connecting anywhere. Before, they fell back to the default ports
    15432/19092: CI's servers, or another checkout's, which a benchmark fills and drops."""
    with pytest.raises(resolution.NoServerError) as stopped:
        store_bench.main(["--backends", "postgres", "--no-write"])
    assert isinstance(stopped.value, SystemExit)  # one line and exit status 1, no traceback
    assert "run `make servers-start`" in str(stopped.value.code)
    assert "CASETRAIL_PG_DSN" in str(stopped.value.code)


def test_no_benchmark_falls_back_to_a_default_server() -> None:
    """No module of bench/ names the shared default ports, reads a server setting with a
    default, or builds Kafka's settings from the bare environment (whose default is 19092);
    none imports the tests' resolution."""
    bench = Path(__file__).resolve().parents[2] / "bench"
    found = []
    for module in sorted(bench.rglob("*.py")):
        text = module.read_text(encoding="utf-8")
        for wrong in (
            "15432",
            "19092",
            'environ.get("CASETRAIL_PG_DSN"',
            'environ.get("CASETRAIL_KAFKA_BOOTSTRAP"',
            "KafkaSettings.from_env()",
            "tests.support.servers",
        ):
            if wrong in text:
                found.append(f"{module.relative_to(bench)}: {wrong}")
    assert found == []


def test_the_infra_scripts_stop_and_start_the_resolved_servers(record: Path) -> None:
    """The soak run and the fault suite restart servers through one ``run_script``
    (infra/servers.py), whose scripts get the ports of the servers ``server_setting``
    resolves, recorded ones included."""
    record.parent.mkdir(parents=True)
    record.write_text(
        "CASETRAIL_PG_DSN=postgresql://postgres@127.0.0.1:15999/casetrail\n"
        "CASETRAIL_KAFKA_BOOTSTRAP=127.0.0.1:19999\n"
    )
    env = resolution.script_environment()
    assert (env["CASETRAIL_PG_PORT"], env["CASETRAIL_KAFKA_PORT"]) == ("15999", "19999")


SCRIPT_SETTINGS = [name for names in resolution.SCRIPT_SETTINGS.values() for name in names]


def test_the_infra_scripts_find_a_recorded_server_in_the_dir_it_was_started_in(
    record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """servers.mk takes CASETRAIL_PG_DIR, CASETRAIL_KAFKA_DIR and
    CASETRAIL_KAFKA_CONTROLLER_PORT; with the ports alone, stop.sh looked for the server in the
    default dir, found none running, and left it serving (and start.sh failed on its port)."""
    started_with = {
        "CASETRAIL_PG_DIR": "/srv/casetrail/postgres",
        "CASETRAIL_KAFKA_DIR": "/srv/casetrail/kafka",
        "CASETRAIL_KAFKA_CONTROLLER_PORT": "19555",
    }
    for name, value in started_with.items():
        monkeypatch.setenv(name, value)
    _record(tmp_path, "CASETRAIL_PG_DSN", "postgresql://postgres@127.0.0.1:15999/casetrail")
    _record(tmp_path, "CASETRAIL_KAFKA_BOOTSTRAP", "127.0.0.1:19999")
    for name in SCRIPT_SETTINGS:
        monkeypatch.delenv(name)
    env = resolution.script_environment()
    assert {name: env[name] for name in SCRIPT_SETTINGS} == started_with
    assert (env["CASETRAIL_PG_PORT"], env["CASETRAIL_KAFKA_PORT"]) == ("15999", "19999")
    assert resolution.recorded_servers() == {
        "CASETRAIL_PG_DSN": "postgresql://postgres@127.0.0.1:15999/casetrail",
        "CASETRAIL_KAFKA_BOOTSTRAP": "127.0.0.1:19999",
    }


def test_a_recorded_dir_is_not_given_for_another_server(
    record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the environment names other servers, the record's dirs are not theirs."""
    monkeypatch.setenv("CASETRAIL_PG_DIR", "/srv/casetrail/postgres")
    _record(tmp_path, "CASETRAIL_PG_DSN", "postgresql://postgres@127.0.0.1:15999/casetrail")
    _record(tmp_path, "CASETRAIL_KAFKA_BOOTSTRAP", "127.0.0.1:19999")
    for name in SCRIPT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CASETRAIL_PG_DSN", "postgresql://postgres@127.0.0.1:15570/casetrail")
    env = resolution.script_environment()
    assert "CASETRAIL_PG_DIR" not in env
    assert env["CASETRAIL_PG_PORT"] == "15570"
    assert env["CASETRAIL_KAFKA_DIR"] == str(tmp_path / "var" / "kafka")  # recorded, resolved


def test_the_soak_run_takes_no_token_issuer_or_server_script_from_the_tests() -> None:
    """Its issuer is the product's development issuer, its restarts infra/servers.py's."""
    text = (Path(__file__).resolve().parents[2] / "bench" / "soak.py").read_text()
    assert "tests.support.identity" not in text
    assert "tests.faults.servers" not in text
