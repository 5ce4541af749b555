"""Certificate-bound tokens (RFC 8705; review of identity, h-authrev): a token whose ``cnf``
names a client certificate's thumbprint works only on calls that came over mutual TLS with that
certificate, and a confirmation this server cannot prove (DPoP's ``jkt``) refuses the token."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.rpc import error_details_pb2, status_pb2

from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.grpc_platform.server import create_server
from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.grpc_auth import bearer_metadata, principal_of
from casetrail_platform.identity.tls import ClientTls, ServerTls, channel
from tests.support.certificates import INTAKE, Certificates, serve_echo
from tests.support.grpc import details, refusal
from tests.support.identity import TestIssuer


def _thumbprint(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _reason(status: status_pb2.Status) -> str:
    (info,) = details(status, error_details_pb2.ErrorInfo)
    return str(info.reason)


async def test_a_certificate_bound_token_works_only_with_its_certificate(
    issuer: TestIssuer,
    certificates: Certificates,
) -> None:
    mutual = ServerTls(certificates.server_chain, certificates.server_key, certificates.ca)
    server, address = await serve_echo(issuer, mutual)
    bound_here = {"cnf": {"x5t#S256": _thumbprint(certificates.client_chain)}}
    bound_elsewhere = {"cnf": {"x5t#S256": _thumbprint(certificates.server_chain)}}
    client = ClientTls(certificates.ca, certificates.client_chain, certificates.client_key)
    try:
        async with channel(address, client, plaintext_allowed=False) as secure:
            intake = intake_pb2_grpc.IntakeServiceStub(secure)
            token = issuer.mint("kim", extra=bound_here)
            answer = await intake.GetCase(
                intake_pb2.GetCaseRequest(), metadata=bearer_metadata(token)
            )
            assert answer.record.case_id == "kim"
            stolen = issuer.mint("kim", extra=bound_elsewhere)
            code, status = await refusal(
                intake.GetCase(intake_pb2.GetCaseRequest(), metadata=bearer_metadata(stolen))
            )
            assert code is grpc.StatusCode.UNAUTHENTICATED
            assert _reason(status) == "TOKEN_CERTIFICATE_MISMATCH"
    finally:
        await server.stop(None)


async def test_a_certificate_bound_token_over_tls_without_a_client_certificate_is_refused(
    issuer: TestIssuer,
    certificates: Certificates,
) -> None:
    server, address = await serve_echo(
        issuer, ServerTls(certificates.server_chain, certificates.server_key)
    )
    token = issuer.mint("kim", extra={"cnf": {"x5t#S256": _thumbprint(certificates.client_chain)}})
    try:
        async with channel(address, ClientTls(certificates.ca), plaintext_allowed=False) as secure:
            intake = intake_pb2_grpc.IntakeServiceStub(secure)
            code, status = await refusal(
                intake.GetCase(intake_pb2.GetCaseRequest(), metadata=bearer_metadata(token))
            )
            assert code is grpc.StatusCode.UNAUTHENTICATED
            assert _reason(status) == "TOKEN_CERTIFICATE_MISMATCH"
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    "confirmation",
    [
        {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
        {"x5t#S256": "too-short"},
        {"x5t#S256": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", "jkt": "x"},
        "x5t#S256",
        [],
    ],
)
async def test_a_confirmation_that_cannot_be_proven_here_refuses_the_token(
    issuer: TestIssuer, confirmation: object
) -> None:
    with pytest.raises(InvalidCredential) as refused:
        await issuer.verifier().verify(issuer.mint("kim", extra={"cnf": confirmation}))
    assert (refused.value.reason, refused.value.claim) == ("TOKEN_CLAIM_INVALID", "cnf")


async def _callers_as_case_ids(
    request: intake_pb2.GetCaseRequest, context: grpc.aio.ServicerContext[object, object]
) -> AsyncIterator[intake_pb2.GetCaseResponse]:
    """A streaming answer: the caller's subject as the case id of each of two messages."""
    for _ in range(2):
        answer = intake_pb2.GetCaseResponse()
        answer.record.case_id = principal_of(context).subject
        yield answer


def _register_stream(server: grpc.aio.Server) -> None:
    handler = grpc.unary_stream_rpc_method_handler(
        _callers_as_case_ids,
        request_deserializer=intake_pb2.GetCaseRequest.FromString,
        response_serializer=intake_pb2.GetCaseResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(INTAKE, {"GetCase": handler}),)
    )


async def _drain(call: Any) -> None:
    async for _ in call:
        pytest.fail("a message reached a caller without the token's certificate")


async def test_a_streaming_answer_is_held_to_the_certificate_too(
    issuer: TestIssuer,
    certificates: Certificates,
) -> None:
    mutual = ServerTls(certificates.server_chain, certificates.server_key, certificates.ca)
    server, port, _ = await create_server(
        "127.0.0.1:0", [_register_stream], [INTAKE], verifier=issuer.verifier(), tls=mutual
    )
    await server.start()
    client = ClientTls(certificates.ca, certificates.client_chain, certificates.client_key)
    here = issuer.mint("kim", extra={"cnf": {"x5t#S256": _thumbprint(certificates.client_chain)}})
    elsewhere = issuer.mint(
        "kim", extra={"cnf": {"x5t#S256": _thumbprint(certificates.server_chain)}}
    )
    try:
        async with channel(f"localhost:{port}", client, plaintext_allowed=False) as secure:
            stream = secure.unary_stream(
                f"/{INTAKE}/GetCase",
                request_serializer=intake_pb2.GetCaseRequest.SerializeToString,
                response_deserializer=intake_pb2.GetCaseResponse.FromString,
            )
            answers = [
                answer.record.case_id
                async for answer in stream(
                    intake_pb2.GetCaseRequest(), metadata=bearer_metadata(here)
                )
            ]
            assert answers == ["kim", "kim"]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _drain(
                    stream(intake_pb2.GetCaseRequest(), metadata=bearer_metadata(elsewhere))
                )
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(None)
