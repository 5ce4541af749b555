"""The servers of this checkout, for its tests and benchmarks: ``CASETRAIL_PG_DSN`` and
``CASETRAIL_KAFKA_BOOTSTRAP`` from the environment, else those `make servers-start` recorded in
``var/servers.env`` (infra/record-server.sh), never a default port: that would be another
checkout's servers, or CI's, which a test or a benchmark may wipe.

Here, beside the script that records them, because both tests/support/servers.py and bench/
use it and a benchmark does not import the tests; not in casetrail_platform, the services'
package, which knows nothing of a checkout (a deployment names its servers)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import MutableMapping
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

INFRA = Path(__file__).resolve().parent
RECORDED_SERVERS = INFRA.parent / "var" / "servers.env"
PG_DSN = "CASETRAIL_PG_DSN"
KAFKA_BOOTSTRAP = "CASETRAIL_KAFKA_BOOTSTRAP"
SERVER_SETTINGS = (PG_DSN, KAFKA_BOOTSTRAP)
# Of each server, what its scripts resolved when it was started (servers.mk's settings), which
# infra/record-server.sh records beside its address: its scripts need them to find it again.
SCRIPT_SETTINGS = {
    PG_DSN: ("CASETRAIL_PG_DIR",),
    KAFKA_BOOTSTRAP: ("CASETRAIL_KAFKA_DIR", "CASETRAIL_KAFKA_CONTROLLER_PORT"),
}


class NoServerError(SystemExit):
    """Neither the environment nor this checkout's record names the server: a benchmark ends
    with this one line (exit status 1), a test fails or skips on it (tests/support/servers.py)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no server for this checkout: run `make servers-start` (it records them in"
            f" {RECORDED_SERVERS}), or set {name}"
        )
        self.message = str(self.code)


def _recorded() -> dict[str, str]:
    """Every setting ``var/servers.env`` holds (``NAME=VALUE`` lines), none without it."""
    try:
        lines = RECORDED_SERVERS.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    pairs = (line.partition("=") for line in lines if not line.startswith("#"))
    return {name: value for name, _, value in pairs if value}


def recorded_servers() -> dict[str, str]:
    """The servers' addresses ``var/servers.env`` holds (``SERVER_SETTINGS``)."""
    return {name: value for name, value in _recorded().items() if name in SERVER_SETTINGS}


def use_recorded_servers(env: MutableMapping[str, str]) -> None:
    """Put the recorded servers into ``env`` where it names none, so that whatever reads the
    environment (``KafkaSettings.from_env``, a service process started with it) connects to
    the same servers as ``server_setting``."""
    for name, value in recorded_servers().items():
        if not env.get(name):
            env[name] = value


def server_setting(name: str) -> str:
    """``name`` (one of ``SERVER_SETTINGS``) from the environment, else as recorded;
    ``NoServerError`` when neither has it."""
    value = os.environ.get(name) or recorded_servers().get(name)
    if not value:
        raise NoServerError(name)
    return value


def servers_environment(*names: str) -> dict[str, str]:
    """This process's environment with each of ``names`` resolved by ``server_setting``: for
    ``KafkaSettings.from_env`` and the processes a benchmark starts, which would otherwise
    fall back to the default ports."""
    return {**os.environ, **{name: server_setting(name) for name in names}}


def script_environment() -> dict[str, str]:
    """The settings of infra/'s stop and start scripts, taken from the servers'
    addresses (``server_setting``) so that a script stops the very server the caller uses;
    for a recorded server, also its dirs and Kafka's controller port as recorded
    (``SCRIPT_SETTINGS``) where the environment names none: with the ports alone, a server
    started in another dir was looked for in the default one, and never stopped."""
    env = dict(os.environ)
    recorded = _recorded()
    for address, settings in SCRIPT_SETTINGS.items():
        if recorded.get(address) != server_setting(address):
            continue  # the environment names another server than the recorded one
        for name in settings:
            if not env.get(name) and recorded.get(name):
                env[name] = recorded[name]
    env["CASETRAIL_PG_PORT"] = str(conninfo_to_dict(server_setting(PG_DSN)).get("port") or 5432)
    env["CASETRAIL_KAFKA_PORT"] = server_setting(KAFKA_BOOTSTRAP).split(",")[0].rsplit(":", 1)[1]
    return env


async def run_script(server: str, script: str) -> None:
    """``infra/<server>/<script>`` (``stop.sh``, ``start.sh``) on this checkout's servers,
    for the fault suite and the soak run; ``RuntimeError`` with its last output when it fails."""
    process = await asyncio.create_subprocess_exec(
        str(INFRA / server / script),
        env=script_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        text = stderr.decode(errors="replace")[-3000:]
        raise RuntimeError(f"infra/{server}/{script} failed:\n{text}")
