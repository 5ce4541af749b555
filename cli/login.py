"""`casetrail login` / `casetrail token`: a bearer token from the development issuer that
`make run` started (DEVELOPMENT ONLY: its signing key is in the data directory).

``login`` saves the token in ``<data dir>/identity/login-token`` (owner-only) for the other
commands; ``token`` prints it (for grpcurl: ``-H "authorization: Bearer $(casetrail token
...)"``). With a real issuer, get a token from it and pass ``--token`` or ``CASETRAIL_TOKEN``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from casetrail_platform.identity.development import DEFAULT_AGENCY, DevelopmentSigner, identity_dir
from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.identity.verifier import TokenVerifier

TOKEN_FILE = "login-token"


def run(options: argparse.Namespace) -> int:
    data_dir = Path(options.data_dir)
    try:
        signer = DevelopmentSigner.load(data_dir)
    except LookupError as error:
        print(error, file=sys.stderr)
        return 2
    token = signer.mint(
        options.user,
        options.role,
        agency=options.agency or DEFAULT_AGENCY,
        team=options.team,
        entitlements=options.entitlement or (),
        lifetime_seconds=options.hours * 3600,
    )
    if options.command == "token":
        print(token)
        return 0
    path = identity_dir(data_dir) / TOKEN_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    until = datetime.now(UTC) + timedelta(hours=options.hours)
    print(f"logged in as {options.user} ({options.role}) until {until:%Y-%m-%d %H:%M} UTC")
    print(f"token saved in {path} (development issuer {signer.issuer})")
    return 0


def bearer_token(options: argparse.Namespace) -> str:
    """The token a command calls with: --token / CASETRAIL_TOKEN, else the saved login."""
    if options.token:
        return str(options.token)
    path = identity_dir(Path(options.data_dir)) / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SystemExit(
            "no token: run `casetrail login --user U --role auditor` (development issuer) "
            "or pass --token / CASETRAIL_TOKEN"
        ) from None


def trusted_verifier(data_dir: Path) -> TokenVerifier:
    """The verifier of the issuer the services trust: the configured one
    (``CASETRAIL_OIDC_ISSUER``), else the development issuer `make run` started in
    ``data_dir``."""
    issuer = IssuerSettings.from_env()
    if issuer is not None:
        return issuer.verifier()
    signer = DevelopmentSigner.load(data_dir)
    return TokenVerifier.for_issuer(signer.issuer, signer.audience)
