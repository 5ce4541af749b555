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
- ``CASETRAIL_GRPC_ALLOW_PLAINTEXT``: ``1`` lets a server without TLS listen, and a client
  without ``CASETRAIL_TLS_CA`` dial, beyond loopback (a service mesh terminates TLS).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from casetrail_platform.identity.keys import LOOPBACK

ALLOW_PLAINTEXT = "CASETRAIL_GRPC_ALLOW_PLAINTEXT"
"""``1``: a gRPC server without TLS may listen beyond loopback, and a client without TLS may
dial an address beyond it (a service mesh's sidecar terminates mutual TLS in front of the
service and of the client, or a trial install); ``0`` or unset: both refuse to."""


class PlaintextRefused(ValueError):
    """A server without TLS asked to listen where others can reach it, or a client without
    TLS asked to dial a server beyond this machine."""


def allow_plaintext(env: Mapping[str, str], name: str = ALLOW_PLAINTEXT) -> bool:
    """The value of ``name`` (``ALLOW_PLAINTEXT``, or the audit console's own setting);
    ``ValueError`` for anything but ``1``, ``0`` or unset."""
    value = env.get(name, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{name} must be 1 or 0")
    return value == "1"


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


LOCAL_SCHEMES = ("unix:", "unix-abstract:", "vsock:")
"""Targets that never leave this machine: a socket file, an abstract socket, a VM's host."""


def _host_of(authority: str) -> str:
    """``host`` of ``host:port``, ``[v6]:port``, ``[v6]``, ``host`` or a bare IPv6 address."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority[1:]
    if authority.count(":") == 1:
        return authority.partition(":")[0]
    return authority  # no port, or a bare IPv6 address (whose last group is not a port)


def target_hosts(address: str) -> list[str] | None:
    """The hosts a gRPC target names (``host:port``, ``[::1]:port``, ``dns:[//authority/]``,
    ``ipv4:``/``ipv6:`` lists), lower case; ``None`` for one that stays on this machine
    (``LOCAL_SCHEMES``)."""
    target = address.strip()
    if target.lower().startswith(LOCAL_SCHEMES):
        return None
    scheme, colon, rest = target.partition(":")
    if colon and scheme.lower() == "dns":
        if rest.startswith("//"):
            rest = rest[2:].partition("/")[2]  # the DNS server's authority is not the host
        target = rest.lstrip("/")
    elif colon and scheme.lower() in ("ipv4", "ipv6"):
        return [_host_of(one.strip()).lower() for one in rest.split(",")]
    return [_host_of(target).lower()]


def require_tls_beyond_loopback_target(
    address: str, tls: ClientTls | None, *, plaintext_allowed: bool
) -> None:
    """``PlaintextRefused`` when a channel without ``tls`` would go to ``address`` whose host
    is not a loopback one (``LOOPBACK``; a ``unix:`` socket is local) and plain text was not
    allowed (``ALLOW_PLAINTEXT``): every call carries a bearer token (the console's, every
    auditor's), which anyone on the way could then read and use. The server's
    ``require_tls_beyond_loopback``, for its clients."""
    if tls is not None or plaintext_allowed:
        return
    hosts = target_hosts(address)
    if hosts is None or all(host in LOOPBACK for host in hosts):
        return
    raise PlaintextRefused(
        f"gRPC to {address} without TLS would carry bearer tokens in plain text beyond this"
        " machine; set CASETRAIL_TLS_CA to the CA bundle that signed the server's certificate,"
        f" or set {ALLOW_PLAINTEXT}=1 when a service mesh's sidecar terminates TLS on the way"
    )


def channel(
    address: str,
    tls: ClientTls | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    *,
    plaintext_allowed: bool,
) -> grpc.aio.Channel:
    """A channel to a casetrail server, over TLS when ``tls`` is given; ``interceptors`` see
    every call (the CLI's deadline). Without ``tls``, only to a loopback address unless
    ``plaintext_allowed`` (``ALLOW_PLAINTEXT``): ``PlaintextRefused`` otherwise
    (``require_tls_beyond_loopback_target``), before anything is sent."""
    require_tls_beyond_loopback_target(address, tls, plaintext_allowed=plaintext_allowed)
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.credentials(), interceptors=interceptors)
