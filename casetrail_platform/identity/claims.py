"""The claims casetrail reads from a verified token, bounded and checked before use.

- ``sub``: the user id recorded as the actor of every event; 1-64 of ``A-Z a-z 0-9 . _ : -``,
  starting with a letter or digit (the catalog's ``Identifier``, so that every event it
  causes can be stored and published), and none of ``SERVICE_ACTOR_IDS`` in any case.
- ``role``: the one role the caller acts in; one of ``events.catalog.base.Role``.
- ``agency``: the agency the caller works for; 1-64 of ``A-Z a-z 0-9 . _ : -``, starting
  with a letter or digit.
- ``team`` (optional): the caller's team inside the agency; as ``agency``.
- ``entitlements`` (optional): extra grants, e.g. ``break_glass``; a list of at most 32
  names of 1-64 ``a-z 0-9 . _ : -``.
- ``cnf`` (optional): the token is bound to the client certificate whose SHA-256 thumbprint
  ``x5t#S256`` names (RFC 8705): a call must come over mutual TLS with that certificate. Any
  other confirmation (a DPoP key's ``jkt``...) cannot be proven here and refuses the token:
  taken as a plain bearer token, a stolen bound token would work for anyone.

``iss``, ``aud``, ``exp`` (and ``nbf``, ``iat`` when present) are checked by the verifier:
each a finite number of seconds up to the year 9999, and ``exp`` at most the verifier's maximum
token lifetime (default 24 hours) after ``iat`` (or after now, without ``iat``).
A claim that breaks its rule refuses the whole token: nothing of it is used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.principal import Principal
from events.catalog.base import Role

SUBJECT = "sub"
ROLE = "role"
AGENCY = "agency"
TEAM = "team"
ENTITLEMENTS = "entitlements"
CONFIRMATION = "cnf"
CERTIFICATE_THUMBPRINT = "x5t#S256"

MAX_ENTITLEMENTS = 32
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
"""The catalog's ``Identifier`` rule (events.catalog.base)."""
UNIT_RULE = "required: 1-64 letters, digits or . _ : - (see the README)"
"""The rule of ``sub``, ``agency`` and ``team``, as a refusal states it."""
_ENTITLEMENT = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
"""A SHA-256 digest in unpadded base64url."""
_ROLES = frozenset(role.value for role in Role)
SERVICE_ACTOR_IDS = frozenset({"coordination", "audit-ledger-witness", "stand-in"})
"""The user ids the services record their own events under (role ``system``: coordination's
follow-ups, audit's ledger witness, the stand-in of a refused request). A token naming one as
its subject would put its caller's refusals and acts in the trail as the service's own."""


def principal_from_claims(claims: Mapping[str, object], issuer: str) -> Principal:
    """The principal the verified ``claims`` describe; ``InvalidCredential`` naming the first
    claim that is missing or breaks its rule."""
    subject = _matching(claims, SUBJECT, _UNIT)
    if subject.lower() in SERVICE_ACTOR_IDS:
        raise invalid_claim(SUBJECT, "names one of casetrail's own services (reserved)")
    role = claims.get(ROLE)
    if not isinstance(role, str) or role not in _ROLES:
        raise invalid_claim(ROLE, "must be one of: " + ", ".join(sorted(_ROLES)))
    agency = _matching(claims, AGENCY, _UNIT)
    team = _matching(claims, TEAM, _UNIT) if claims.get(TEAM) is not None else None
    return Principal(
        subject=subject,
        role=Role(role),
        agency=agency,
        issuer=issuer,
        team=team,
        entitlements=_entitlements(claims.get(ENTITLEMENTS)),
        certificate_thumbprint=_certificate_bound(claims.get(CONFIRMATION)),
    )


def is_unit(value: str) -> bool:
    """Whether ``value`` keeps the rule of ``sub``, ``agency`` and ``team`` (``UNIT_RULE``): an
    agency id a token may name, so one the services are configured with must keep it too."""
    return _UNIT.fullmatch(value) is not None


def _matching(claims: Mapping[str, object], name: str, pattern: re.Pattern[str]) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise invalid_claim(name, UNIT_RULE)
    return value


def _entitlements(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or len(value) > MAX_ENTITLEMENTS:
        raise invalid_claim(ENTITLEMENTS, f"must be a list of at most {MAX_ENTITLEMENTS} names")
    for item in value:
        if not isinstance(item, str) or _ENTITLEMENT.fullmatch(item) is None:
            raise invalid_claim(ENTITLEMENTS, "each must be 1-64 of a-z 0-9 . _ : -")
    return frozenset(value)


def _certificate_bound(value: object) -> str | None:
    if value is None:
        return None
    thumbprint = value.get(CERTIFICATE_THUMBPRINT) if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or set(value) != {CERTIFICATE_THUMBPRINT}
        or not isinstance(thumbprint, str)
        or _THUMBPRINT.fullmatch(thumbprint) is None
    ):
        raise invalid_claim(
            CONFIRMATION, "only a client certificate's binding (x5t#S256, RFC 8705) is honoured"
        )
    return thumbprint


def invalid_claim(claim: str, rule: str) -> InvalidCredential:
    """The refusal of a token whose ``claim`` breaks ``rule`` (``TOKEN_CLAIM_INVALID``)."""
    # The value itself is never echoed: it came from an unverified-looking source of text.
    return InvalidCredential("TOKEN_CLAIM_INVALID", f"token claim {claim!r}: {rule}", claim)
