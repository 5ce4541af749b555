"""Authentication of every gRPC call: a server interceptor that checks the bearer token in the
``authorization`` metadata and binds the verified principal to the call (``principal_of``).

Health and reflection stay open (Kubernetes probes, grpcurl); every other method of the
server refuses a call without a valid token as ``UNAUTHENTICATED`` before the servicer runs.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from casetrail_platform.identity.errors import (
    CERTIFICATE_MISMATCH,
    InvalidCredential,
    IssuerUnavailable,
)
from casetrail_platform.identity.principal import Principal
from casetrail_platform.identity.verifier import TokenVerifier

AUTHORIZATION = "authorization"
CLIENT_HEADER = "x-casetrail-client"
CLIENT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A client application's name: what ``RecordAccessed.client_application`` accepts."""
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
ERROR_DOMAIN = "casetrail.v1"

_log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("casetrail_principal")


def principal_of(context: object) -> Principal:
    """The verified caller of the current call.

    ``context`` is the servicer method's ``grpc.aio.ServicerContext``: grpc.aio runs each call
    in its own task, and the interceptor binds the principal to that task before the servicer
    runs. Raises ``LookupError`` outside an authenticated call (a server built without the
    interceptor, which ``create_server`` never does).
    """
    del context  # the binding is per call task; the parameter says which call is meant
    try:
        return _principal.get()
    except LookupError:
        raise LookupError("no authenticated principal for this call") from None


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of the call's ``authorization: Bearer <token>`` metadata."""
    values = [value for key, value in metadata or () if key == AUTHORIZATION]
    if not values:
        raise InvalidCredential("TOKEN_MISSING", "a bearer token is required (authorization)")
    if len(values) > 1:
        raise InvalidCredential("TOKEN_MALFORMED", "more than one authorization header")
    value = values[0]
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    scheme, _, token = text.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidCredential(
            "TOKEN_MALFORMED", "authorization must be 'Bearer <token>' (an OIDC-style JWT)"
        )
    return token.strip()


def client_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The client application a call names (``x-casetrail-client``), or None; ``ValueError``
    for a value that is not one name of 1 to 64 lower-case letters, digits, '.', '_', '-'."""
    values = [value for key, value in metadata or () if key == CLIENT_HEADER]
    if not values:
        return None
    text = values[0] if isinstance(values[0], str) else ""
    if len(values) > 1 or not CLIENT_NAME.fullmatch(text):
        raise ValueError(
            f"{CLIENT_HEADER} must be one name of 1 to 64 lower-case letters, digits, '.', '_'"
            " or '-'"
        )
    return text


def _bad_client(problem: str) -> status_pb2.Status:
    request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=CLIENT_HEADER, description=problem)
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(request)
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=problem, details=[packed])


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """What a client sends with each call."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


class BearerAuthentication(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Verifies each call's bearer token with ``verifier`` before the servicer runs: in the
    call itself (``_bound``), not while its handler is looked up, so that the interceptors
    outside it (capacity's limit) refuse a call before any token work is done."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        metadata = details.invocation_metadata
        return _bound(handler, lambda context: self._principal(metadata, context))

    async def _principal(self, metadata: Any, context: Any) -> Principal:
        """The call's verified principal, or the call aborted with the refusal."""
        refusal: status_pb2.Status | None = None
        try:
            principal = await self._verifier.verify(bearer_token(metadata))
        except InvalidCredential as error:
            refusal = _status(code_pb2.UNAUTHENTICATED, error)
        except IssuerUnavailable as error:
            refusal = _status(code_pb2.UNAVAILABLE, error)
        except Exception as error:
            # A fault's message or traceback may hold the token (a KeyError names its key):
            # its type alone is logged, and the caller told no more than that it failed.
            _log.error("verifying a bearer token failed (%s)", type(error).__name__)
            refusal = _status(
                code_pb2.UNAUTHENTICATED,
                InvalidCredential("TOKEN_INVALID", "the bearer token could not be verified"),
            )
        else:
            try:
                client = client_of(metadata)
            except ValueError as error:  # naming the header's rule, never a value
                refusal = _bad_client(str(error))
        if refusal is not None:
            await context.abort_with_status(rpc_status.to_status(refusal))
            raise AssertionError("abort_with_status returned")  # it raises: for the types
        bound = replace(principal, client=client)
        await _refuse_unbound(bound, context)
        return bound


def _status(code: int, error: Exception) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=getattr(error, "reason", "ISSUER_UNAVAILABLE"), domain=ERROR_DOMAIN
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    return status_pb2.Status(code=code, message=str(error), details=[packed])


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _rebuilt(handler: grpc.RpcMethodHandler, kind: str, behaviour: Any) -> grpc.RpcMethodHandler:
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _kind(handler: grpc.RpcMethodHandler) -> str:
    return next(kind for kind in _KINDS if getattr(handler, kind) is not None)


def certificate_thumbprint(context: Any) -> str | None:
    """The SHA-256 thumbprint (unpadded base64url of the DER) of the client certificate the
    call came with over mutual TLS, or None (plain text, or TLS without one)."""
    presented = context.auth_context().get("x509_pem_cert")
    if not presented:
        return None
    certificate = x509.load_pem_x509_certificate(presented[0])
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def _refuse_unbound(principal: Principal, context: Any) -> None:
    """Aborts the call unless it came with the certificate the token is bound to (if any)."""
    bound = principal.certificate_thumbprint
    if bound is None or certificate_thumbprint(context) == bound:
        return
    refusal = InvalidCredential(
        CERTIFICATE_MISMATCH,
        "the token is bound to a client certificate this call did not come with (cnf, RFC 8705)",
    )
    await context.abort_with_status(
        rpc_status.to_status(_status(code_pb2.UNAUTHENTICATED, refusal))
    )


def _bound(
    handler: grpc.RpcMethodHandler, authenticate: Callable[[Any], Awaitable[Principal]]
) -> grpc.RpcMethodHandler:
    # grpc.aio runs each call in a task of its own, so the binding ends with the call.
    kind = _kind(handler)
    inner = getattr(handler, kind)
    if inspect.isasyncgenfunction(inner):

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            _principal.set(await authenticate(context))
            async for message in inner(request, context):
                yield message

        return _rebuilt(handler, kind, streaming)

    async def answering(request: Any, context: Any) -> Any:
        _principal.set(await authenticate(context))
        return await inner(request, context)

    return _rebuilt(handler, kind, answering)
