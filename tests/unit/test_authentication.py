"""Every RPC of every service, as found by server reflection, refuses a call without a valid
bearer token as UNAUTHENTICATED, and writes nothing; health and reflection stay open.

The services run as `make run` composes them, trusting the tests' issuer (discovery + JWKS
over HTTP on 127.0.0.1); the bad tokens are made the way an attacker would make them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from casetrail.common.v1 import common_pb2
from casetrail.intake.v1 import intake_pb2, intake_pb2_grpc
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.identity.tokens import SigningKey
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog_registry import default_registry
from services.runner import SERVICES, start_services, stop_services
from tests.support.identity import TestIssuer

OPEN = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")


@dataclass(frozen=True)
class Method:
    path: str
    server_streaming: bool


@pytest.fixture
async def running(tmp_path: Path, issuer: TestIssuer) -> AsyncIterator[dict[str, str]]:
    infra = Infrastructure.embedded(tmp_path, verifier=issuer.verifier())
    services = await start_services(infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0))
    try:
        yield {service.name: f"127.0.0.1:{service.port}" for service in services}
    finally:
        await stop_services(services)


async def reflected_methods(channel: grpc.aio.Channel) -> list[Method]:
    """Every method of every service the server lists, health and reflection left out."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services="")]
    answers = [answer async for answer in stub.ServerReflectionInfo(iter(requests))]
    names = [s.name for s in answers[0].list_services_response.service if s.name not in OPEN]
    methods: list[Method] = []
    for name in names:
        asked = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)]
        (answer,) = [a async for a in stub.ServerReflectionInfo(iter(asked))]
        files = answer.file_descriptor_response.file_descriptor_proto
        for raw in files:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for service in proto.service:
                if f"{proto.package}.{service.name}" != name:
                    continue
                methods += [
                    Method(f"/{name}/{method.name}", method.server_streaming)
                    for method in service.method
                ]
    return methods


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _signed_as(issuer: TestIssuer, token_type: str) -> str:
    """A token the issuer really signed, for another use than access (its ``typ``)."""
    return jwt.encode(
        _claims(issuer),
        issuer.key.private_key,
        algorithm=issuer.key.algorithm,
        headers={"kid": issuer.key.key_id, "typ": token_type},
    )


def _claims(issuer: TestIssuer) -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": issuer.url,
        "aud": issuer.audience,
        "sub": "mallory",
        "role": "auditor",
        "agency": "eastbay-dss",
        "iat": now,
        "exp": now + 600,
    }


def bad_tokens(issuer: TestIssuer) -> dict[str, Callable[[], str | None]]:
    """Each kind of bad credential: how to make it (``None``: no authorization at all)."""
    now = time.time()
    key_id = issuer.key.key_id

    def alg_none() -> str:
        return _unsigned({"alg": "none", "kid": key_id, "typ": "JWT"}, _claims(issuer)) + "."

    def alg_not_a_string() -> str:
        return _unsigned({"alg": ["ES256"], "kid": key_id}, _claims(issuer)) + ".c2ln"

    def hs256_with_the_public_key() -> str:
        public = issuer.key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input = _unsigned({"alg": "HS256", "kid": key_id, "typ": "JWT"}, _claims(issuer))
        mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def tampered() -> str:
        header, payload, signature = issuer.mint("kim", "receptionist").split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["role"] = "auditor"
        return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"

    return {
        "no token": lambda: None,
        "expired": lambda: issuer.mint(now=now - 7200, lifetime_seconds=600),
        "not yet valid": lambda: issuer.mint(now=now + 3600),
        "wrong issuer": lambda: issuer.mint(issuer="https://issuer.example.org"),
        "wrong audience": lambda: issuer.mint(audience="another-system"),
        "alg none": alg_none,
        "alg not a string": alg_not_a_string,
        "HS256 signed with the public key": hs256_with_the_public_key,
        "unknown key id": lambda: issuer.mint(key=SigningKey.generate("ES256")),
        "tampered payload": tampered,
        "malformed": lambda: "not-a-jwt",
        "not an access token": lambda: _signed_as(issuer, "logout+jwt"),
        "no key id": lambda: jwt.encode(
            _claims(issuer), issuer.key.private_key, algorithm=issuer.key.algorithm
        ),
        "a service's own subject": lambda: issuer.mint("coordination", "system"),
        "role outside the catalog": lambda: issuer.mint(role="wizard"),
        "subject with spaces": lambda: issuer.mint(subject="kim the auditor"),
    }


async def test_every_rpc_refuses_every_bad_token_and_writes_nothing(
    running: dict[str, str], issuer: TestIssuer, tmp_path: Path
) -> None:
    refused: dict[str, set[str]] = {}
    checked = 0
    for name, address in running.items():
        async with grpc.aio.insecure_channel(address) as channel:
            methods = await reflected_methods(channel)
            assert methods, f"{name} lists no method"
            for method in methods:
                for kind, make in bad_tokens(issuer).items():
                    token = make()
                    metadata = bearer_metadata(token) if token is not None else ()
                    code, reason, message = await _call(channel, method, metadata)
                    assert code is grpc.StatusCode.UNAUTHENTICATED, (method.path, kind, code)
                    assert message, (method.path, kind)
                    refused.setdefault(kind, set()).add(reason)
                    checked += 1
    assert checked >= 12 * 40
    assert refused["no token"] == {"TOKEN_MISSING"}
    assert refused["expired"] == {"TOKEN_EXPIRED"}
    assert refused["not yet valid"] == {"TOKEN_NOT_YET_VALID"}
    assert refused["wrong issuer"] == {"TOKEN_WRONG_ISSUER"}
    assert refused["wrong audience"] == {"TOKEN_WRONG_AUDIENCE"}
    assert refused["alg none"] == refused["HS256 signed with the public key"]
    assert refused["alg none"] == refused["alg not a string"] == {"TOKEN_ALGORITHM_REFUSED"}
    assert refused["not an access token"] == {"TOKEN_TYPE_REFUSED"}
    assert refused["unknown key id"] == refused["no key id"] == {"TOKEN_KEY_UNKNOWN"}
    assert refused["tampered payload"] == {"TOKEN_BAD_SIGNATURE"}
    assert refused["malformed"] == {"TOKEN_MALFORMED"}
    assert refused["role outside the catalog"] == refused["subject with spaces"]
    assert refused["a service's own subject"] == {"TOKEN_CLAIM_INVALID"}
    # Nothing of any of these calls reached a store.
    for name in running:
        store = await SqliteEventStore.open(tmp_path / name / "events.db", default_registry())
        try:
            assert await store.last_position() == 0, name
        finally:
            await store.close()


async def _call(
    channel: grpc.aio.Channel, method: Method, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, str, str]:
    try:
        if method.server_streaming:
            async for _ in channel.unary_stream(method.path)(b"", metadata=metadata):
                pass
        else:
            await channel.unary_unary(method.path)(b"", metadata=metadata)
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)
        reasons = []
        if status is not None:
            for packed in status.details:
                info = error_details_pb2.ErrorInfo()
                if packed.Unpack(info):
                    reasons.append(info.reason)
        return error.code(), ",".join(reasons), error.details() or ""
    return grpc.StatusCode.OK, "", ""


async def test_health_and_reflection_need_no_token(running: dict[str, str]) -> None:
    async with grpc.aio.insecure_channel(running["intake"]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert await reflected_methods(channel)


async def test_a_good_token_names_the_actor_of_every_event(
    running: dict[str, str], issuer: TestIssuer, tmp_path: Path
) -> None:
    async with grpc.aio.insecure_channel(running["intake"]) as channel:
        intake = intake_pb2_grpc.IntakeServiceStub(channel)
        token = issuer.mint("rita.receptionist", "receptionist")
        registered = await intake.RegisterClient(
            intake_pb2.RegisterClientRequest(
                context=common_pb2.CommandContext(idempotency_key="k1"),
                name=intake_pb2.PersonName(given_names="Ada", family_name="Rossi"),
                date_of_birth="1950-01-02",
            ),
            metadata=bearer_metadata(token),
        )
    store = await SqliteEventStore.open(tmp_path / "intake" / "events.db", default_registry())
    try:
        (recorded,) = await store.read_all(0)
    finally:
        await store.close()
    assert recorded.stream.endswith(registered.client_id)
    assert (recorded.metadata.actor.user_id, recorded.metadata.actor.role.value) == (
        "rita.receptionist",
        "receptionist",
    )


async def test_no_token_reaches_a_log_or_a_refusal_even_at_debug(
    running: dict[str, str], issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every kind of bad token and a good one, to one method of each service, logged at DEBUG:
    no token's text, nor its signature or claims segment, in any log record or answer."""
    caplog.set_level(logging.DEBUG)
    tokens = [make() for make in bad_tokens(issuer).values()]
    tokens.append(issuer.mint("kim", "auditor"))
    sent = [token for token in tokens if token is not None and token.count(".") == 2]
    answers: list[str] = []
    for address in running.values():
        async with grpc.aio.insecure_channel(address) as channel:
            method = (await reflected_methods(channel))[0]
            for token in sent:
                code, reason, message = await _call(channel, method, bearer_metadata(token))
                answers.append(f"{code} {reason} {message}")
    seen = caplog.text + "\n".join(answers)
    assert len(answers) == len(sent) * len(running)
    for token in sent:
        for segment in (token, *(part for part in token.split(".")[1:] if len(part) > 16)):
            assert segment not in seen
