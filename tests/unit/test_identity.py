"""The token verifier against a real issuer over HTTP (key rotation, claims), and TLS / mutual
TLS on a casetrail gRPC server with certificates made here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.identity.tls import ClientTls, ServerTls, channel
from casetrail_platform.identity.tokens import SigningKey
from casetrail_platform.identity.verifier import TokenVerifier
from tests.support.certificates import Certificates, serve_echo
from tests.support.identity import TestIssuer

# --- the verifier ------------------------------------------------------------------------------


@pytest.fixture
def rotating() -> Iterator[TestIssuer]:
    """An issuer of this test's own, whose keys the test rotates."""
    issuer = TestIssuer()
    yield issuer
    issuer.stop()


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
async def test_each_asymmetric_algorithm_is_accepted(algorithm: str) -> None:
    issuer = TestIssuer(algorithm)
    try:
        principal = await issuer.verifier().verify(issuer.mint("kim", "auditor", team="north"))
    finally:
        issuer.stop()
    assert (principal.subject, principal.role.value, principal.team) == ("kim", "auditor", "north")
    assert (principal.agency, principal.issuer) == ("eastbay-dss", issuer.url)


async def test_a_rotated_key_is_picked_up_and_a_withdrawn_one_refused(
    rotating: TestIssuer,
) -> None:
    verifier = rotating.verifier()
    old_token = rotating.mint("kim", "auditor")
    assert (await verifier.verify(old_token)).subject == "kim"

    new_key = SigningKey.generate("ES256")
    rotating.published.append(new_key)
    new_token = rotating.mint("lee", "auditor", key=new_key)
    # A key id not seen yet makes the verifier fetch the JWKS again.
    assert (await verifier.verify(new_token)).subject == "lee"

    rotating.published.remove(rotating.key)
    other_key = SigningKey.generate("ES256")
    rotating.published.append(other_key)
    await verifier.verify(rotating.mint("max", "auditor", key=other_key))  # a refresh
    with pytest.raises(InvalidCredential) as refused:
        await verifier.verify(old_token)  # remembered before, withdrawn since
    assert refused.value.reason == "TOKEN_KEY_UNKNOWN"


@pytest.mark.parametrize(
    ("fields", "claim"),
    [
        ({"agency": ""}, "agency"),
        ({"team": "a team"}, "team"),
        ({"subject": "x" * 65}, "sub"),
        ({"entitlements": ["Break Glass"]}, "entitlements"),
        ({"entitlements": [f"e{n}" for n in range(33)]}, "entitlements"),
    ],
)
async def test_claims_are_bounded_and_checked(
    issuer: TestIssuer, fields: dict[str, object], claim: str
) -> None:
    subject = str(fields.pop("subject", "kim"))
    with pytest.raises(InvalidCredential) as refused:
        await issuer.verifier().verify(issuer.mint(subject, "auditor", **fields))
    assert refused.value.reason == "TOKEN_CLAIM_INVALID"
    assert repr(claim) in str(refused.value)


async def test_an_unreachable_issuer_is_unavailable_not_a_bad_token() -> None:
    issuer = TestIssuer()
    token = issuer.mint()
    verifier = issuer.verifier()
    issuer.stop()
    from casetrail_platform.identity.errors import IssuerUnavailable

    with pytest.raises(IssuerUnavailable):
        await verifier.verify(token)


async def test_calls_arriving_while_the_first_key_fetch_is_in_flight_wait_for_it() -> None:
    """Many calls at a process's start: the first fetches the issuer's keys, the others must
    neither be refused as bad tokens nor pile fetches on the issuer (CI once saw one call of
    thirty-six answered UNAUTHENTICATED as the first fetch landed)."""
    import asyncio
    import threading

    from casetrail_platform.identity.keys import IssuerKeys, http_json

    issuer = TestIssuer()
    token = issuer.mint()
    fetching = threading.Event()
    release = threading.Event()
    fetches = 0
    real = http_json()

    def slow_fetch(url: str) -> Any:
        nonlocal fetches
        if url.endswith("openid-configuration"):
            fetches += 1
            fetching.set()
            release.wait(10)
        return real(url)

    keys = IssuerKeys(issuer.url, fetch=slow_fetch, min_refresh_interval=60.0)
    verifier = TokenVerifier(keys, issuer.audience)
    try:
        first = asyncio.create_task(verifier.verify(token))
        await asyncio.to_thread(fetching.wait, 10)
        others = [asyncio.create_task(verifier.verify(token + "")) for _ in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        principals = await asyncio.gather(first, *others)
    finally:
        issuer.stop()
    assert {principal.subject for principal in principals} == {"tester"}
    assert fetches == 1


# --- TLS ---------------------------------------------------------------------------------------


async def test_tls_carries_the_token_and_mutual_tls_requires_a_client_certificate(
    issuer: TestIssuer, certificates: Certificates
) -> None:
    tls = ServerTls(certificates.server_chain, certificates.server_key, certificates.ca)
    server, address = await serve_echo(issuer, tls)
    with_certificate = ClientTls(
        certificates.ca, certificates.client_chain, certificates.client_key
    )
    try:
        async with channel(address, with_certificate, plaintext_allowed=False) as secure:
            intake = intake_pb2_grpc.IntakeServiceStub(secure)
            answer = await intake.GetCase(
                intake_pb2.GetCaseRequest(), metadata=bearer_metadata(issuer.mint("kim"))
            )
            assert answer.record.case_id == "kim"
            with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                await intake.GetCase(intake_pb2.GetCaseRequest())
            assert unauthenticated.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # Without a client certificate the handshake fails: not even health answers.
        async with channel(
            address, ClientTls(certificates.ca), plaintext_allowed=False
        ) as anonymous:
            health = health_pb2_grpc.HealthStub(anonymous)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        # Nor does plain text reach a TLS port.
        async with grpc.aio.insecure_channel(address) as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(plain).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
    finally:
        await server.stop(None)


async def test_tls_without_client_certificates_serves_any_client_that_trusts_the_server(
    issuer: TestIssuer, certificates: Certificates
) -> None:
    server, address = await serve_echo(
        issuer, ServerTls(certificates.server_chain, certificates.server_key)
    )
    try:
        async with channel(address, ClientTls(certificates.ca), plaintext_allowed=False) as secure:
            health = health_pb2_grpc.HealthStub(secure)
            answer = await health.Check(health_pb2.HealthCheckRequest())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


def test_tls_settings_come_from_the_environment() -> None:
    assert ServerTls.from_env({}) is None
    with pytest.raises(ValueError, match="both"):
        ServerTls.from_env({"CASETRAIL_TLS_CERT": "x"})
    with pytest.raises(ValueError, match="CLIENT_CA"):
        ServerTls.from_env({"CASETRAIL_TLS_CLIENT_CA": "x"})
