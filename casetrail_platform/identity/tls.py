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
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc


def _read(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{name}={path}: cannot read it ({error.strerror})") from None


def _checked_pair(
    env: Mapping[str, str], certificate_name: str, key_name: str
) -> tuple[bytes, bytes]:
    """The certificate chain and key the two variables name, once OpenSSL has parsed both and
    found that the key is the certificate's. gRPC reads them only when it binds or connects,
    and then reports a bad PEM as "Failed to bind to address", or aborts the process."""
    certificate, key = env[certificate_name], env[key_name]
    chain, private_key = _read(certificate_name, certificate), _read(key_name, key)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(certificate, key)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(
            f"{certificate_name}={certificate} and {key_name}={key}: not a PEM certificate"
            f" chain and its matching private key ({error})"
        ) from None
    return chain, private_key


def _checked_ca(env: Mapping[str, str], name: str) -> bytes:
    """The CA bundle ``name`` names, once OpenSSL has parsed it."""
    path = env[name]
    bundle = _read(name, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"{name}={path}: not a PEM CA bundle ({error})") from None
    return bundle


@dataclass(frozen=True)
class ServerTls:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    """Set: mutual TLS, every client must present a certificate this CA signed."""
    files: tuple[str, str, str | None] | None = None
    """The certificate's, key's and client CA's files when read from them (``ssl_context``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServerTls | None:
        """``ValueError`` naming the variable and file when a PEM is missing, unreadable, not
        parsable, or a key not its certificate's."""
        certificate, key = env.get("CASETRAIL_TLS_CERT"), env.get("CASETRAIL_TLS_KEY")
        client_ca = env.get("CASETRAIL_TLS_CLIENT_CA")
        if not certificate and not key:
            if client_ca:
                raise ValueError("CASETRAIL_TLS_CLIENT_CA needs CASETRAIL_TLS_CERT and _KEY")
            return None
        if not certificate or not key:
            raise ValueError("TLS needs both CASETRAIL_TLS_CERT and CASETRAIL_TLS_KEY")
        chain, private_key = _checked_pair(env, "CASETRAIL_TLS_CERT", "CASETRAIL_TLS_KEY")
        return cls(
            chain,
            private_key,
            _checked_ca(env, "CASETRAIL_TLS_CLIENT_CA") if client_ca else None,
            (certificate, key, client_ca or None),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same TLS for an HTTP server (the caseload views): Python's ``ssl`` reads the
        certificate and key from their files only, so only a ``from_env`` one has it."""
        if self.files is None:
            raise ValueError("an HTTPS server needs TLS read from CASETRAIL_TLS_CERT and _KEY")
        certificate, key, client_ca = self.files
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

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
        if bool(certificate) != bool(key):
            # gRPC's C core aborts the whole process on a certificate without its key.
            raise ValueError(
                "mutual TLS needs both CASETRAIL_TLS_CLIENT_CERT and CASETRAIL_TLS_CLIENT_KEY"
            )
        ca = _checked_ca(env, "CASETRAIL_TLS_CA")
        if not certificate:
            return cls(ca)
        chain, private_key = _checked_pair(
            env, "CASETRAIL_TLS_CLIENT_CERT", "CASETRAIL_TLS_CLIENT_KEY"
        )
        return cls(ca, chain, private_key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.server_ca,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def channel(
    address: str,
    tls: ClientTls | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to a casetrail server, over TLS when ``tls`` is given; ``interceptors`` see
    every call (the CLI's deadline)."""
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.credentials(), interceptors=interceptors)
