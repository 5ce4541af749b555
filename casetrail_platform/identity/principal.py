"""The verified caller of an RPC, built from a token's claims and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field

from events.catalog.base import Role
from events.envelope import Actor


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller whose bearer token was verified.

    ``subject`` is the token's ``sub``; ``role`` the role it acts in (one per token);
    ``agency`` and ``team`` place it in the organisation (relationships such as "supervisor of
    the assigned worker's team" are decided from them); ``entitlements`` are extra grants
    named by the issuer (e.g. ``break_glass``).
    """

    subject: str
    role: Role
    agency: str
    issuer: str
    team: str | None = None
    entitlements: frozenset[str] = field(default_factory=frozenset)
    client: str | None = None
    """The client application the call came through, as its ``x-casetrail-client`` metadata
    names it (e.g. ``casetrail-console``): declared by the caller, not verified, and recorded
    as such in access events."""

    certificate_thumbprint: str | None = None
    """Set when the token is bound to a client certificate (``cnf`` ``x5t#S256``, RFC 8705):
    the certificate's SHA-256 thumbprint, which every call must present over mutual TLS."""

    @property
    def actor(self) -> Actor:
        """The actor recorded on every event this principal causes."""
        return Actor(self.subject, self.role)
