"""The benchmark-only switches of the servers (``--auth-mode``, ``--policy-mode``,
``--telemetry-mode``): the product has none of them; they measure what each part costs."""

from __future__ import annotations

from typing import Any

import grpc
from typing_extensions import override

AUTH_MODES = ("off", "every-call", "product")
"""How the servers check tokens in the authentication rows: ``off`` takes the caller from
the token unchecked (a switch that exists only here, never in the product); ``every-call``
verifies the signature and claims on every call (nothing remembered: the cost of a token
seen for the first time); ``product`` is what the services do (a verified token is
remembered until it expires)."""


POLICY_MODES = ("off", "on")


TELEMETRY_MODES = ("none", "metrics", "metrics+traces")
"""What the servers observe in the telemetry rows: ``none`` serves without the telemetry
interceptor (a switch of this benchmark only); ``metrics`` is the product's default (counters
and latency histograms per call, tracing off); ``metrics+traces`` also traces every call (every
call sampled, spans batched to an exporter that drops them, so no network is measured)."""


def verifier(mode: str = "product") -> Any:
    """The token verifier of the run's issuer (named by the environment, as in production)."""
    from casetrail_platform.identity.keys import IssuerKeys
    from casetrail_platform.identity.settings import IssuerSettings
    from casetrail_platform.identity.verifier import TokenVerifier

    settings = IssuerSettings.from_env()
    if settings is None:
        raise SystemExit("the benchmark's servers need CASETRAIL_OIDC_ISSUER")
    if mode == "every-call":
        return TokenVerifier(IssuerKeys(settings.issuer), settings.audience, remembered=0)
    if mode == "off":
        return _unchecked(settings.issuer)
    return settings.verifier()


def _unchecked(issuer: str) -> Any:
    """A verifier that checks nothing: the caller is read from the token's claims as they
    are (each token decoded once). Benchmark only: it measures what the checks cost."""
    import jwt

    from casetrail_platform.identity.claims import principal_from_claims
    from casetrail_platform.identity.keys import IssuerKeys
    from casetrail_platform.identity.principal import Principal
    from casetrail_platform.identity.verifier import TokenVerifier

    class Unchecked(TokenVerifier):
        def __init__(self) -> None:
            super().__init__(IssuerKeys(issuer), "")
            self._seen: dict[str, Principal] = {}

        @override
        async def verify(self, token: str) -> Principal:
            principal = self._seen.get(token)
            if principal is None:
                claims = jwt.decode(token, options={"verify_signature": False})
                principal = self._seen[token] = principal_from_claims(claims, issuer)
            return principal

    return Unchecked()


def switch_policy_off() -> None:
    """The benchmark's own switch (the product has none): every read allowed with everything
    disclosed, no facts looked up, nothing recorded. What remains is the read itself."""
    from casetrail_platform.policy.guard import AccessControl
    from casetrail_platform.policy.vocabulary import Decision

    allowed = Decision(True, "checks-off", sensitive=True)

    async def no_facts(self: Any, case_id: str, own_entries: Any = ()) -> Any:
        from casetrail_platform.policy.facts import unknown_case

        return unknown_case(case_id)

    async def authorize(self: Any, *args: Any) -> Decision:
        return allowed

    async def require_role(self: Any, *args: Any) -> None:
        return None

    async def release(self: Any, *args: Any) -> list[Any]:
        return []

    AccessControl.case_facts = no_facts  # type: ignore[method-assign]
    AccessControl.decide = lambda self, *args: allowed  # type: ignore[method-assign]
    AccessControl.authorize = authorize  # type: ignore[method-assign,assignment]
    AccessControl.require_role = require_role  # type: ignore[method-assign,assignment]
    AccessControl.release = release  # type: ignore[method-assign,assignment]


def set_telemetry(mode: str) -> None:
    """(--serve) Install the telemetry of ``mode`` before the services start."""
    if mode == "none":
        from casetrail_platform.grpc_platform import server

        class PassThrough(grpc.aio.ServerInterceptor):  # type: ignore[misc]
            async def intercept_service(self, continuation: Any, details: Any) -> Any:
                return await continuation(details)

        server.TelemetryInterceptor = PassThrough  # type: ignore[attr-defined]
    elif mode == "metrics+traces":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from casetrail_platform.telemetry.tracing import enable_tracing

        class Dropping(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        enable_tracing(provider)
