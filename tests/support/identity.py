"""A real token issuer for the tests (discovery + JWKS over HTTP on 127.0.0.1, keys made by
the test set-up) and the callers of the servicer tests.

Servicer tests build a request's context with a helper that names who acts
(``acting(person, context)``); the channel that ``caller_channel`` wraps then sends a token the
issuer minted for that person with the call. The context itself carries no identity: the
helper only remembers which person built a context with this idempotency key (commands) or
purpose (queries), the latest one winning (or, for a context changed since, the latest
builder of its kind), and a call whose context nobody built this way fails instead of going
out anonymous.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from casetrail_platform.identity.development import DevelopmentSigner
from casetrail_platform.identity.grpc_auth import bearer_metadata
from casetrail_platform.identity.issuer_http import IssuerHttpServer
from casetrail_platform.identity.keys import IssuerKeys
from casetrail_platform.identity.tokens import SigningKey, mint
from casetrail_platform.identity.verifier import TokenVerifier
from cli.rpc import Person, TokenSource, minted_by

AUDIENCE = "casetrail-tests"
M = TypeVar("M", bound=Message)


class TestIssuer:
    """Signs with ``key``; publishes every key in ``published`` (rotation: add, then drop)."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, algorithm: str = "ES256") -> None:
        self.key = SigningKey.generate(algorithm)
        self.published: list[SigningKey] = [self.key]
        self._server = IssuerHttpServer(lambda: [key.public_jwk() for key in self.published])
        self.url = self._server.url
        self.audience = AUDIENCE
        self.signer = DevelopmentSigner(self.key, self.url, self.audience)
        self.tokens: TokenSource = minted_by(self.signer)

    def verifier(self) -> TokenVerifier:
        # No pause between key refreshes: tests rotate keys within a second.
        return TokenVerifier(IssuerKeys(self.url, min_refresh_interval=0.0), self.audience)

    def mint(self, subject: str = "tester", role: str = "coordinator", **fields: Any) -> str:
        fields.setdefault("agency", "eastbay-dss")
        fields.setdefault("issuer", self.url)
        fields.setdefault("audience", self.audience)
        return mint(fields.pop("key", self.key), subject=subject, role=role, **fields)

    def token_for(self, person: Person) -> str:
        return self.tokens(person)

    def env(self) -> dict[str, str]:
        """The settings a service process needs to trust this issuer."""
        return {"CASETRAIL_OIDC_ISSUER": self.url, "CASETRAIL_OIDC_AUDIENCE": self.audience}

    def stop(self) -> None:
        self._server.stop()


_built_by: dict[tuple[str, str], Person] = {}
_latest: dict[str, Person] = {}
"""For a context changed after it was built (a key emptied to be refused, say)."""


def acting(person: Person, context: M) -> M:
    """``context``, remembered as built by ``person`` (whose token its calls will carry)."""
    _built_by[_key(context)] = person
    _latest[type(context).__name__] = person
    return context


def forget_callers() -> None:
    _built_by.clear()
    _latest.clear()


def _key(context: Message) -> tuple[str, str]:
    # What a test does not change after building a context: its key or its purpose.
    return type(context).__name__, str(
        getattr(context, "idempotency_key", "") or getattr(context, "purpose", "")
    )


def caller_of(request: Message) -> Person:
    context = getattr(request, "context", None)
    person = None
    if isinstance(context, Message):
        person = _built_by.get(_key(context)) or _latest.get(type(context).__name__)
    if person is None:
        raise LookupError(
            f"{type(request).__name__}: no caller known for its context "
            "(build it with tests.support.identity.acting)"
        )
    return person


def caller_channel(channel: grpc.aio.Channel, issuer: TestIssuer) -> Any:
    """``channel`` whose calls carry the token of the person who built each request's context
    (or the ``metadata`` a test passes itself)."""
    return _CallerChannel(channel, issuer)


class _CallerChannel:
    def __init__(self, inner: grpc.aio.Channel, issuer: TestIssuer) -> None:
        self._inner = inner
        self._issuer = issuer

    async def __aenter__(self) -> _CallerChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.close()

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def __getattr__(self, name: str) -> Any:
        make = getattr(self._inner, name)

        def method(*args: Any, **kwargs: Any) -> _CallerCall:
            return _CallerCall(make(*args, **kwargs), self._issuer)

        return method


class _CallerCall:
    def __init__(self, inner: Any, issuer: TestIssuer) -> None:
        self._inner = inner
        self._issuer = issuer

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        # Health and reflection requests have no context and need no token.
        if metadata is None and hasattr(request, "context"):
            metadata = bearer_metadata(self._issuer.token_for(caller_of(request)))
        return self._inner(request, metadata=metadata, **kwargs)
