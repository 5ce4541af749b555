"""Kafka authentication and TLS settings from the environment (what the Helm chart sets)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest

from casetrail_platform.bus import kafka_dead_letters
from casetrail_platform.bus.kafka_security import KafkaSecurity
from casetrail_platform.bus.kafka_settings import KafkaSettings
from services.caseload.processor import broker_credentials


def test_plaintext_by_default_adds_no_client_options() -> None:
    settings = KafkaSettings.from_env({})
    assert settings.security.protocol == "PLAINTEXT"
    assert settings.security.client_options() == {}
    assert broker_credentials(settings.security) is None


def test_sasl_scram_from_the_environment() -> None:
    settings = KafkaSettings.from_env(
        {
            "CASETRAIL_KAFKA_BOOTSTRAP": "kafka:9092",
            "CASETRAIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CASETRAIL_KAFKA_SASL_USERNAME": "casetrail-intake",
            "CASETRAIL_KAFKA_SASL_PASSWORD": "s3cret-pw",
        }
    )
    options = settings.security.client_options()
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "casetrail-intake",
        "sasl_plain_password": "s3cret-pw",
    }
    assert "s3cret-pw" not in repr(settings)
    credentials = broker_credentials(settings.security)
    assert isinstance(credentials, faust.SASLCredentials)


def test_sasl_without_a_password_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="CASETRAIL_KAFKA_SASL_PASSWORD"):
        KafkaSecurity.from_env({"CASETRAIL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="CASETRAIL_KAFKA_SECURITY_PROTOCOL"):
        KafkaSecurity.from_env({"CASETRAIL_KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_a_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="CASETRAIL_KAFKA_SSL_KEYFILE"):
        KafkaSecurity(protocol="SSL", ssl_certfile="/tls/user.crt")


def test_tls_builds_a_verifying_context(tmp_path: Path) -> None:
    security = KafkaSecurity.from_env({"CASETRAIL_KAFKA_SECURITY_PROTOCOL": "SSL"})
    options = security.client_options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert isinstance(broker_credentials(security), faust.SSLCredentials)


def test_the_sasl_password_may_come_from_a_file(tmp_path: Path) -> None:
    """The chart mounts the KafkaUser's password (0400, 0440 with the pod's fsGroup): in no
    environment variable, where /proc/<pid>/environ and every child process would show it."""
    path = tmp_path / "password"
    path.write_bytes(b"scram-pw\n")
    path.chmod(0o440)
    security = KafkaSecurity.from_env(
        {
            "CASETRAIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CASETRAIL_KAFKA_SASL_USERNAME": "casetrail-intake",
            "CASETRAIL_KAFKA_SASL_PASSWORD_FILE": str(path),
        }
    )
    assert security.client_options()["sasl_plain_password"] == "scram-pw"
    assert "scram-pw" not in repr(security)


def test_a_sasl_password_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes(b"scram-pw")
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others") as refused:
        KafkaSecurity.from_env({"CASETRAIL_KAFKA_SASL_PASSWORD_FILE": str(path)})
    assert "scram-pw" not in str(refused.value)


class SpyConsumer:
    """Takes aiokafka's consumer's place: records how it was made, lists one DLQ topic."""

    made: list[dict[str, Any]] = []

    def __init__(self, *topics: str, **options: Any) -> None:
        SpyConsumer.made.append(options)

    async def start(self) -> None:
        return None

    async def topics(self) -> set[str]:
        return {"casetrail.audit.timeline.dlq", "casetrail.case-events"}

    async def stop(self) -> None:
        return None


async def test_the_dead_letter_tools_consumer_authenticates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `casetrail dlq list/replay` made its consumer without the security options (its producer
    # and admin client had them): plain text to a TLS or SASL cluster, refused.
    monkeypatch.setattr(kafka_dead_letters, "AIOKafkaConsumer", SpyConsumer)
    settings = KafkaSettings.from_env(
        {
            "CASETRAIL_KAFKA_BOOTSTRAP": "kafka:9092",
            "CASETRAIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CASETRAIL_KAFKA_SASL_USERNAME": "casetrail-ops",
            "CASETRAIL_KAFKA_SASL_PASSWORD": "s3cret-pw",
        }
    )
    SpyConsumer.made.clear()
    assert await kafka_dead_letters.dead_letter_topics(settings) == ["casetrail.audit.timeline.dlq"]
    [options] = SpyConsumer.made
    assert options.items() >= settings.security.client_options().items()
    assert options["security_protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize(
    ("variable", "value", "told"),
    [
        ("CASETRAIL_KAFKA_SASL_PASSWORD_FILE", "/nonexistent/kafka-password", "SASL password"),
        ("CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS", "0", "milliseconds from 1"),
        ("CASETRAIL_KAFKA_BOOTSTRAP", "127.0.0.1:99999", "the port must be from 1 to 65535"),
        ("CASETRAIL_KAFKA_BOOTSTRAP", "[::1:19270", "is not host:port"),
        ("CASETRAIL_KAFKA_PORT", "99999", "a port from 1 to 65535"),
    ],
)
async def test_a_bad_kafka_setting_ends_serve_in_one_line_naming_it(
    variable: str, value: str, told: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's other settings ended in one line; Kafka's in a traceback (ValueError)."""
    from services import runner

    monkeypatch.setenv("CASETRAIL_OIDC_ISSUER", "https://issuer.example")
    monkeypatch.setenv("CASETRAIL_OIDC_AUDIENCE", "casetrail")
    if variable == "CASETRAIL_KAFKA_PORT":  # read only without a bootstrap
        monkeypatch.delenv("CASETRAIL_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv(variable, value)
    options = runner.parse(["--backend", "distributed", "--any-port", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^Kafka: ") as ended:
        await runner.serve(options, tmp_path)
    assert variable in str(ended.value)
    assert told in str(ended.value)


@pytest.mark.parametrize(
    "bootstrap",
    [
        "kafka:9092",
        "casetrail-kafka-kafka-bootstrap:9093",
        "127.0.0.1:19270",
        "[::1]:9092",
        "[fe80::1%eth0]:9092",
        "k1:9092,k2:9092",
        " k1:9092 , [::1]:9093 ",
        "kafka.agency.internal:9096",
        "bücher.example:9092",
        "kafka",
        "kafka,10.0.0.7:9093",
    ],
)
def test_the_brokers_the_kafka_client_can_dial_are_taken(bootstrap: str) -> None:
    settings = KafkaSettings.from_env({"CASETRAIL_KAFKA_BOOTSTRAP": bootstrap})
    assert settings.bootstrap_servers == bootstrap.strip()


@pytest.mark.parametrize(
    ("bootstrap", "problem"),
    [
        ("127.0.0.1:99999", "127.0.0.1:99999: the port must be from 1 to 65535"),
        ("127.0.0.1:0", "127.0.0.1:0: the port must be from 1 to 65535"),
        ("127.0.0.1:abc", "'127.0.0.1:abc' is not host:port"),
        ("a..b", "'a..b': the host is no host name or address"),
        (":9092", "':9092' is not host:port"),
        ("k1:9092,,k2:9092", "'' is not host:port"),
        ("[::1:19270", "'[::1:19270' is not host:port (an IPv6 address in brackets"),
        ("[::1]", "'[::1]' is not host:port"),
        ("[a]b:1", "'[a]b:1' is not host:port (an IPv6 address in brackets"),
        ("::1:9092", "'::1:9092' is not host:port (an IPv6 address in brackets"),
        ("[127.0.0.1]:9092", "'[127.0.0.1]:9092': the host is no host name or address"),
        ("\udcff:9092", "'\\udcff:9092': the host is no host name or address"),
        ("a..b:9092", "'a..b:9092': the host is no host name or address"),
        ("k1:9092,k2:70000", "k2:70000: the port must be from 1 to 65535"),
    ],
)
def test_brokers_the_kafka_client_cannot_dial_are_refused_naming_the_variable(
    bootstrap: str, problem: str
) -> None:
    """aiokafka parses them (collect_hosts) only when a client starts, and failed with a
    traceback: int('abc'), an unclosed bracket's unpacking, a port beyond 65535 at connect,
    a host its resolver cannot encode (UnicodeError)."""
    with pytest.raises(ValueError, match=f"^CASETRAIL_KAFKA_BOOTSTRAP: {re.escape(problem)}"):
        KafkaSettings.from_env({"CASETRAIL_KAFKA_BOOTSTRAP": bootstrap})


@pytest.mark.parametrize("port", ["99999", "0", "nine", "9092a", "\u0661"])
def test_a_kafka_port_beyond_the_ports_is_refused_naming_the_variable(port: str) -> None:
    """Only its digits were checked: 99999 reached the client (OverflowError at connect)."""
    with pytest.raises(ValueError, match=r"^CASETRAIL_KAFKA_PORT must be a port from 1 to 65535"):
        KafkaSettings.from_env({"CASETRAIL_KAFKA_PORT": port})
    assert KafkaSettings.from_env({"CASETRAIL_KAFKA_PORT": "65535"}).bootstrap_servers == (
        "127.0.0.1:65535"
    )
