"""How Kafka clients authenticate and encrypt: plaintext (development), SASL/SCRAM or TLS.

Read from the environment with the rest of ``KafkaSettings`` (the Helm chart sets these from the
KafkaUser Strimzi creates per process):

``CASETRAIL_KAFKA_SECURITY_PROTOCOL``  ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or
                                       ``SASL_SSL``
``CASETRAIL_KAFKA_SASL_MECHANISM``     ``SCRAM-SHA-512`` (default with SASL), ``SCRAM-SHA-256``
                                       or ``PLAIN``
``CASETRAIL_KAFKA_SASL_USERNAME``, ``CASETRAIL_KAFKA_SASL_PASSWORD`` (or
``CASETRAIL_KAFKA_SASL_PASSWORD_FILE``: a file holding it on one line, owner- or group-readable
only, so that the password is in no environment variable; the chart mounts the KafkaUser's)
``CASETRAIL_KAFKA_SSL_CAFILE``         the cluster CA (PEM); TLS verifies the brokers with it
``CASETRAIL_KAFKA_SSL_CERTFILE``, ``CASETRAIL_KAFKA_SSL_KEYFILE``  a client certificate (mutual
                                       TLS; Strimzi's ``user.crt``/``user.key``)

The password never appears in a repr, a log or an error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casetrail_platform.private_files import read_password

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"CASETRAIL_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)},"
                f" got {self.protocol!r}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(
                    "CASETRAIL_KAFKA_SASL_MECHANISM must be one of"
                    f" {', '.join(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}"
                )
            if not self.sasl_username or not self.sasl_password:
                raise ValueError(
                    f"{self.protocol} needs CASETRAIL_KAFKA_SASL_USERNAME and"
                    " CASETRAIL_KAFKA_SASL_PASSWORD"
                )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError(
                "CASETRAIL_KAFKA_SSL_CERTFILE and CASETRAIL_KAFKA_SSL_KEYFILE go together"
            )

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        def get(name: str, default: str = "") -> str:
            return env.get(f"CASETRAIL_KAFKA_{name}", default).strip() or default

        return cls(
            protocol=get("SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            sasl_mechanism=get("SASL_MECHANISM", "SCRAM-SHA-512").upper(),
            sasl_username=get("SASL_USERNAME"),
            sasl_password=_sasl_password(env),
            ssl_cafile=get("SSL_CAFILE"),
            ssl_certfile=get("SSL_CERTFILE"),
            ssl_keyfile=get("SSL_KEYFILE"),
        )

    def ssl_context(self) -> Any:
        """The TLS context for the brokers (``None`` without TLS)."""
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(
            cafile=self.ssl_cafile or None,
            certfile=self.ssl_certfile or None,
            keyfile=self.ssl_keyfile or None,
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options


PASSWORD_FILE_VARIABLE = "CASETRAIL_KAFKA_SASL_PASSWORD_FILE"


def _sasl_password(env: Mapping[str, str]) -> str:
    """``CASETRAIL_KAFKA_SASL_PASSWORD_FILE``'s password when set, else
    ``CASETRAIL_KAFKA_SASL_PASSWORD``."""
    name = env.get(PASSWORD_FILE_VARIABLE, "")
    if not name:
        return env.get("CASETRAIL_KAFKA_SASL_PASSWORD", "")
    return read_password(Path(name), f"the Kafka SASL password ({PASSWORD_FILE_VARIABLE})")
