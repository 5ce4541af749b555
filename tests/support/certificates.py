"""Certificates made here for TLS and mutual TLS (a test CA, a server certificate for
localhost, a client certificate), and a gRPC server behind them whose one RPC answers who
called: the tests of TLS on casetrail's servers, the console and caseload share them (the
``certificates`` fixture of tests/conftest.py makes them once per module)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from casetrail.intake.v1 import intake_pb2
from casetrail_platform.grpc_platform.server import create_server
from casetrail_platform.identity.grpc_auth import principal_of
from casetrail_platform.identity.tls import ServerTls
from tests.support.identity import TestIssuer

INTAKE = "casetrail.intake.v1.IntakeService"


@dataclass(frozen=True)
class Certificates:
    ca: bytes
    server_chain: bytes
    server_key: bytes
    client_chain: bytes
    client_key: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_name: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def made_certificates() -> Certificates:
    """A test CA, a server certificate for localhost and a client certificate, all made here."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("casetrail test CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", server_key, ca.subject, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("casetrail-cli", client_key, ca.subject, ca_key)
    pem = serialization.Encoding.PEM
    return Certificates(
        ca.public_bytes(pem),
        server.public_bytes(pem),
        _key_pem(server_key),
        client.public_bytes(pem),
        _key_pem(client_key),
    )


async def _caller_as_case_id(
    request: intake_pb2.GetCaseRequest, context: grpc.aio.ServicerContext[object, object]
) -> intake_pb2.GetCaseResponse:
    """A GetCase that answers with the caller's subject as the case id."""
    answer = intake_pb2.GetCaseResponse()
    answer.record.case_id = principal_of(context).subject
    return answer


def _register_echo(server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        _caller_as_case_id,
        request_deserializer=intake_pb2.GetCaseRequest.FromString,
        response_serializer=intake_pb2.GetCaseResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(INTAKE, {"GetCase": handler}),)
    )


async def serve_echo(issuer: TestIssuer, tls: ServerTls) -> tuple[grpc.aio.Server, str]:
    """A started server (port 0) whose GetCase answers with the caller's subject as the case
    id, and its address by name (``localhost``, as the server certificate names it)."""
    server, port, _ = await create_server(
        "127.0.0.1:0", [_register_echo], [INTAKE], verifier=issuer.verifier(), tls=tls
    )
    await server.start()
    return server, f"localhost:{port}"
