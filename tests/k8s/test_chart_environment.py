"""The chart and the code agree on the environment: every CASETRAIL_ variable the chart sets is
one the code reads, and every one the code reads is set by the chart (from a value, or fixed by
it) or listed in NOT_SET with the reason it is deliberately left out."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.k8s.render import PROFILES, helm_template
from tests.k8s.tools import REPO, Tools

# Read by the code, deliberately not set by the chart.
NOT_SET = {
    "CASETRAIL_KAFKA_PORT": "a broker on 127.0.0.1 (development); the chart sets the bootstrap",
    "CASETRAIL_CONSOLE_IDLE_MINUTES": "the audit console is not deployed by the chart",
    "CASETRAIL_CONSOLE_ALLOW_PLAINTEXT": "the audit console is not deployed by the chart",
    "CASETRAIL_KAFKA_SASL_PASSWORD": "a password in a variable: the chart gives the file's",
}

# Every optional part of the chart on, so every variable it may set is rendered.
EVERY_OPTION = (
    "--set",
    "authentication.caSecret=issuer-ca",
    "--set",
    "authentication.jwksUrl=https://login.county-social-services.gov/jwks",
    "--set",
    "secrets.previousKeyEncryptionKey=casetrail-kek-previous",
)

_NAME = re.compile(r"\bCASETRAIL_[A-Z0-9_]*[A-Z0-9]\b")


def code_variables() -> set[str]:
    """The CASETRAIL_ names written in the services' and the platform's code."""
    names: set[str] = set()
    for package in ("casetrail_platform", "services"):
        for path in (REPO / package).rglob("*.py"):
            names.update(_NAME.findall(path.read_text()))
    # A prefix the code completes (f"CASETRAIL_KAFKA_{name}") is spelt out in its docstring.
    return {name for name in names if not name.endswith("_")}


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) or spec.get("jobTemplate", {}).get(
        "spec", {}
    ).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def chart_variables(helm: Tools) -> set[str]:
    """The CASETRAIL_ variables of every container the chart renders, in every profile."""
    names: set[str] = set()
    for profile, values in PROFILES.items():
        result = helm_template(helm, values, *EVERY_OPTION)
        assert result.returncode == 0, f"{profile}: {result.stderr}"
        for document in yaml.safe_load_all(result.stdout):
            for container in _containers(document or {}):
                names.update(
                    item["name"]
                    for item in container.get("env", [])
                    if item["name"].startswith("CASETRAIL_")
                )
    return names


def test_every_variable_the_chart_sets_is_read_by_the_code(helm: Tools) -> None:
    assert chart_variables(helm) - code_variables() == set()


def test_every_variable_the_code_reads_is_set_by_the_chart_or_left_out_on_purpose(
    helm: Tools,
) -> None:
    assert code_variables() - chart_variables(helm) - set(NOT_SET) == set()


def test_what_is_left_out_is_read_by_the_code_and_not_set(helm: Tools) -> None:
    assert set(NOT_SET) <= code_variables()
    assert set(NOT_SET) & chart_variables(helm) == set()


def test_the_log_format_and_the_emergency_review_delay_come_from_values(helm: Tools) -> None:
    result = helm_template(
        helm,
        PROFILES["small"],
        "--set",
        "logFormat=text",
        "--set",
        "emergencyReviewHours=24",
    )
    assert result.returncode == 0, result.stderr
    deployments = {
        document["metadata"]["name"]: document
        for document in yaml.safe_load_all(result.stdout)
        if document and document["kind"] == "Deployment"
    }
    for service in ("intake", "coordination", "planning", "audit"):
        env = {
            item["name"]: item.get("value")
            for item in _containers(deployments[f"casetrail-{service}"])[0]["env"]
        }
        assert env["CASETRAIL_LOG_FORMAT"] == "text", service
        # Only intake reviews emergency accesses.
        assert env.get("CASETRAIL_EMERGENCY_REVIEW_HOURS") == (
            "24" if service == "intake" else None
        ), service


class _Recording(dict[str, str]):
    """An environment that remembers every name asked of it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)


def _unread_pair(env: Mapping[str, str], certificate: str, key: str) -> tuple[bytes, bytes]:
    """``tls._checked_pair`` with the names asked and no file read."""
    return env[certificate].encode(), env[key].encode()


def _unread_ca(env: Mapping[str, str], name: str) -> bytes:
    """``tls._checked_ca`` with the name asked and no file read."""
    return env[name].encode()


def _caseload_env(helm: Tools, profile: str) -> dict[str, str]:
    result = helm_template(helm, PROFILES[profile], *EVERY_OPTION)
    assert result.returncode == 0, f"{profile}: {result.stderr}"
    for document in yaml.safe_load_all(result.stdout):
        if (
            document
            and document["kind"] == "Deployment"
            and document["metadata"]["name"].endswith("-caseload")
        ):
            (container,) = document["spec"]["template"]["spec"]["containers"]
            # A Secret's value (valueFrom) stands in as a placeholder: only the name matters.
            return {item["name"]: item.get("value") or "from-a-secret" for item in container["env"]}
    raise AssertionError(f"{profile}: no caseload Deployment")


def test_the_caseload_container_gets_what_the_caseload_reads(
    helm: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caseload processor is no casetrail service: it reads its own settings
    (CaseloadSettings.from_env) and takes its log level as Faust's --loglevel, so the
    services' CASETRAIL_LOG_LEVEL and CASETRAIL_DATA_DIR given to it configured nothing."""
    from services.caseload.settings import CaseloadSettings

    for profile in PROFILES:
        env = _caseload_env(helm, profile)
        recording = _Recording(env)
        # The TLS files are not on this machine: read as empty, so that a file the chart names
        # does not end from_env before the names after it are asked for.
        monkeypatch.setattr("casetrail_platform.identity.tls._checked_pair", _unread_pair)
        monkeypatch.setattr("casetrail_platform.identity.tls._checked_ca", _unread_ca)
        monkeypatch.setattr(
            "casetrail_platform.bus.kafka_security.read_password", lambda path, what: "unread"
        )
        with contextlib.suppress(ValueError, OSError):
            CaseloadSettings.from_env(recording)
        set_by_chart = {name for name in env if name.startswith("CASETRAIL_")}
        assert set_by_chart - recording.asked == set(), profile
        # The other way, the caseload's own settings (what may be left unset, e.g. Kafka's
        # TLS files under SASL, is checked for every process above).
        own = {name for name in recording.asked if name.startswith("CASETRAIL_CASELOAD_")}
        assert own - set_by_chart == set(), profile
