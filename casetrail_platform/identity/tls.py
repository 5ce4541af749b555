"""Transport security of the gRPC servers and their clients: TLS, and mutual TLS when a client
CA is given (the server then accepts only clients with a certificate that CA signed).

Configured by the environment (or the same names as flags of ``casetrail serve``):

- ``CASETRAIL_TLS_CERT``, ``CASETRAIL_TLS_KEY``: the server's certificate chain and private
  key (PEM files); TLS when set.
- ``CASETRAIL_TLS_CLIENT_CA``: CA bundle for client certificates: mutual TLS, required of
  every client.
- ``CASETRAIL_TLS_CA``: clients: the CA bundle that signed the servers' certificates.
- ``CASETRAIL_TLS_CLIENT_CERT``, ``CASETRAIL_TLS_CLIENT_KEY``: clients: their certificate
  and key for mutual TLS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@dataclass(frozen=True)
class ServerTls:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    """Set: mutual TLS, every client must present a certificate this CA signed."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServerTls | None:
        certificate, key = env.get("CASETRAIL_TLS_CERT"), env.get("CASETRAIL_TLS_KEY")
        client_ca = env.get("CASETRAIL_TLS_CLIENT_CA")
        if not certificate and not key:
            if client_ca:
                raise ValueError("CASETRAIL_TLS_CLIENT_CA needs CASETRAIL_TLS_CERT and _KEY")
            return None
        if not certificate or not key:
            raise ValueError("TLS needs both CASETRAIL_TLS_CERT and CASETRAIL_TLS_KEY")
        return cls(_read(certificate), _read(key), _read(client_ca) if client_ca else None)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ClientTls:
    server_ca: bytes
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ClientTls | None:
        server_ca = env.get("CASETRAIL_TLS_CA")
        if not server_ca:
            return None
        certificate, key = env.get("CASETRAIL_TLS_CLIENT_CERT"), env.get("CASETRAIL_TLS_CLIENT_KEY")
        return cls(
            _read(server_ca),
            _read(certificate) if certificate else None,
            _read(key) if key else None,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.server_ca,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def channel(address: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """A channel to a casetrail server, over TLS when ``tls`` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, tls.credentials())
